#!/usr/bin/env bash
# CI: a one-node Slurm cluster on this host, then the cluster test (tests/test_slurm.py) against it.
#
# Installs Debian's slurm-wlm and munge when missing (skips, saying so, only where apt-get is unavailable), writes a
# munge key and a slurm.conf for this host (its CPUs and memory) under a temporary folder, starts munged, slurmctld
# and slurmd in the foreground of background jobs, runs the test and stops exactly the daemons it started.
#   .ci/slurm.sh                 # from the repository root or anywhere; VENV=path/to/venv (default .venv)
#   KEEP=1 .ci/slurm.sh          # keep the temporary folder (logs, job outputs) for a look afterwards
#   SLURM_CI_CMD='sinfo; bash' .ci/slurm.sh   # run a command of your own against the cluster instead
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(realpath "${VENV:-.venv}")

say() { echo "slurm-ci: $*"; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sbatch >/dev/null; then
    if ! command -v apt-get >/dev/null; then
        say "SKIPPED: Slurm (slurm-wlm, munge) is not installed and apt-get is unavailable to install it"
        exit 0
    fi
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    say "installing Debian's slurm-wlm and munge"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
    say "FAILED: no virtual environment at $VENV (run make install first)"
    exit 1
fi

TMP=$(mktemp -d /tmp/defocus-slurm.XXXXXX)
chmod 700 "$TMP"
mkdir -p "$TMP"/{munge,state,spool,log,run}
PIDS=()
TEST_PID=
cleanup() {
    local status=$? i pid
    [ -z "$TEST_PID" ] || kill "$TEST_PID" 2>/dev/null || true
    if [ -n "${SLURM_CONF:-}" ] && [ "${#PIDS[@]}" -eq 3 ]; then
        # a job step runs under its own slurmstepd, which outlives slurmd: cancel this cluster's jobs first
        scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 30); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1; done
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do  # slurmd, slurmctld, then munged
        pid=${PIDS[i]}
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ] || [ "$status" -ne 0 ]; then
        say "logs and job outputs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }

# munge: a fresh key and a socket of our own, so a munged already running on this host is left alone
head -c 1024 /dev/urandom > "$TMP/munge/munge.key"
chmod 400 "$TMP/munge/munge.key"
munged --foreground --force --key-file="$TMP/munge/munge.key" --socket="$TMP/munge/munge.socket" \
    --pid-file="$TMP/munge/munged.pid" --seed-file="$TMP/munge/munged.seed" \
    --log-file="$TMP/log/munged.log" 2>>"$TMP/log/munged.log" &
PIDS+=($!)

HOST=$(hostname -s)
read -r CPUS MEM < <(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*RealMemory=\([0-9]*\).*/\1 \2/p')
USER_NAME=$(id -un)
cat > "$TMP/slurm.conf" <<CONF
ClusterName=defocus-ci
SlurmctldHost=$HOST
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=$USER_NAME
SlurmdUser=$USER_NAME
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$TMP/munge/munge.socket,cred_expire=30
StateSaveLocation=$TMP/state
SlurmdSpoolDir=$TMP/spool
SlurmctldPidFile=$TMP/run/slurmctld.pid
SlurmdPidFile=$TMP/run/slurmd.pid
SlurmctldLogFile=$TMP/log/slurmctld.log
SlurmdLogFile=$TMP/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=10
MinJobAge=600
InactiveLimit=0
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=ci Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$TMP/slurm.conf

for _ in $(seq 50); do [ -S "$TMP/munge/munge.socket" ] && break; sleep 0.1; done
slurmctld -D -f "$SLURM_CONF" >>"$TMP/log/slurmctld.stderr" 2>&1 &
PIDS+=($!)
slurmd -D -f "$SLURM_CONF" >>"$TMP/log/slurmd.stderr" 2>&1 &
PIDS+=($!)

for _ in $(seq 60); do
    sinfo -h -o '%t' 2>/dev/null | grep -q '^idle' && break
    sleep 1
done
if ! sinfo -h -o '%t' 2>/dev/null | grep -q '^idle'; then
    say "FAILED: the one-node cluster did not come up; sinfo says: $(sinfo 2>&1 | tr '\n' ' ')"
    tail -n 20 "$TMP"/log/*.log "$TMP"/log/*.stderr
    exit 1
fi
say "one-node cluster up: $HOST, $CPUS CPUs, $MEM MB (config $SLURM_CONF)"

export DEFOCUS_LIT_SLURM_TMP=$TMP
if [ -n "${SLURM_CI_CMD:-}" ]; then  # a command of your own against the cluster instead of the test
    bash -c "$SLURM_CI_CMD"
else
    # in the background, so that a TERM to this script stops it (cleanup) at once rather than after the test
    "$VENV/bin/python" -m pytest tests/test_slurm.py -v -rs -p no:cacheprovider "$@" &
    TEST_PID=$!
    status=0
    wait "$TEST_PID" || status=$?
    TEST_PID=
    if [ "$status" -eq 0 ]; then
        say "PASSED: tests/test_slurm.py under a real Slurm ($(sinfo -V))"
    else
        say "FAILED: tests/test_slurm.py (pytest exit status $status)"
        exit "$status"
    fi
fi
