"""Training end to end on tiny synthetic data: every architecture, checkpoints, summary, resume, DDP."""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from defocus_lit.cli import main
from defocus_lit.config import load_experiment
from defocus_lit.errors import UserError
from defocus_lit.models.checkpoint import load_checkpoint
from defocus_lit.models.module import build_module, pix2pix_lambda
from defocus_lit.training import run_training

EXPERIMENTS = ["pix2pix_4ch", "uniform_l1", "focus_penalty", "patch_mask", "two_stage"]


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_each_experiment_trains_and_logs_metrics(exp, tiny):
    result = run_training(load_experiment(exp, [*tiny, "loss.gan_weight=1"], cpu_preset=True))
    assert result.best_ckpt.is_file() and result.last_ckpt.is_file()
    for key in (
        "val/psnr",
        "val/ssim",
        "val/psnr_focus",
        "val/psnr_defocus",
        "val/plane_sensitivity",
        "val/depth_gain",
        "val/oracle_gap",
        "baseline/identity/val/psnr",
        "baseline/mask_blur/val/psnr",
        "baseline/global_blur/val/psnr_defocus",
        "baseline/oracle_blur/val/psnr_defocus",
    ):
        assert key in result.metrics, key
    gain = result.metrics["val/psnr_defocus"] - result.metrics["baseline/global_blur/val/psnr_defocus"]
    assert result.metrics["val/depth_gain"] == pytest.approx(gain, abs=1e-4)
    columns = set().union(*read_metrics(result.run_dir))
    assert {"train/loss_g_epoch", "train/loss_d_epoch", "train/gan_g_epoch", "val/psnr", "val/depth_gain"} <= columns
    assert {"train/d_acc_real_epoch", "train/d_acc_fake_epoch", "baseline/oracle_blur/val/psnr"} <= columns
    assert any(
        name.startswith("train/")
        and name.split("/")[1].split("_epoch")[0] in load_experiment(exp, tiny, cpu_preset=True).loss.terms
        for name in columns
    )
    assert list((result.run_dir / "images").glob("val_epoch*.png"))
    generator, cfg = load_checkpoint(result.best_ckpt)
    out = generator(torch.zeros(1, 3, 64, 64), torch.ones(1, 1, 64, 64))
    assert out.shape == (1, 3, 64, 64) and cfg.arch == load_experiment(exp, tiny, cpu_preset=True).arch


def test_one_step_moves_generator_and_discriminator(tiny):
    words = ["trainer.limit_train_batches=1", "trainer.limit_val_batches=0", "loss.gan_weight=1"]
    cfg = load_experiment("two_stage", tiny + words, cpu_preset=True)
    module = build_module(cfg)
    before = {k: v.clone() for k, v in module.state_dict().items() if v.is_floating_point()}
    import lightning as L

    from defocus_lit.data.datamodule import DefocusDataModule
    from defocus_lit.training import dataset_path, trainer_kwargs

    dm = DefocusDataModule(str(dataset_path(cfg)), batch_size=2, crop_size=32, pad_multiple=8)
    L.Trainer(**trainer_kwargs(cfg), logger=False, enable_checkpointing=False).fit(module, datamodule=dm)
    after = module.state_dict()
    for prefix in ("defocuser.generator.", "discriminator."):
        weights = [k for k in before if k.startswith(prefix) and k.endswith("weight") and "norm" not in k]
        assert len(weights) >= 4, (prefix, sorted(before)[:5])  # the prefix names real keys
        moved = [k for k in weights if not torch.equal(before[k], after[k])]
        assert moved, prefix
        assert len(moved) >= 0.9 * len(weights), (prefix, sorted(set(weights) - set(moved)))


def test_cli_prints_where_things_went_and_the_summary(tiny, capsys):
    assert main(["train", "patch_mask", *tiny, "cpu_preset=true"]) == 0
    out = capsys.readouterr().out
    assert "checkpoints:" in out and "metrics.csv" in out and "images" in out
    summary = next(line for line in out.splitlines() if line.startswith("summary:"))
    for key in (
        "val/psnr=",
        "val/ssim=",
        "val/psnr_focus=",
        "baseline/identity/val/psnr=",
        "baseline/mask_blur/val/psnr=",
    ):
        assert key in summary


def test_resume_continues_epoch_step_and_optimizer(tiny):
    first = run_training(load_experiment("pix2pix_4ch", tiny + ["run=r1"], cpu_preset=True))
    state1 = torch.load(first.last_ckpt, weights_only=False)
    second = run_training(
        load_experiment("pix2pix_4ch", tiny + ["resume=true", "trainer.max_epochs=2"], cpu_preset=True)
    )
    assert second.run_dir == first.run_dir
    state2 = torch.load(second.last_ckpt, weights_only=False)
    assert state2["epoch"] > state1["epoch"]
    assert state2["global_step"] == 2 * state1["global_step"]
    adam_steps = lambda s: int(next(iter(s["optimizer_states"][0]["state"].values()))["step"])  # noqa: E731
    assert adam_steps(state2) == 2 * adam_steps(state1)
    assert len(state2["lr_schedulers"]) == 2
    assert first.metrics_csv != second.metrics_csv  # the first part's rows are kept
    assert read_metrics(first.run_dir) and second.metrics_csv.is_file()


def test_resume_without_a_run_is_an_error(tiny, capsys):
    assert main(["train", "pix2pix_4ch", *tiny, "resume=true"]) == 2
    assert "resume=true: no run of 'pix2pix_4ch'" in capsys.readouterr().err


def test_pix2pix_schedule_is_constant_then_linear_to_zero():
    factor = pix2pix_lambda(10, 0.5)
    assert [factor(e) for e in range(5)] == [1.0] * 5
    decay = [factor(e) for e in range(4, 10)]
    assert all(a > b for a, b in zip(decay, decay[1:])) and 0 < decay[-1] < 0.2


def test_ddp_two_processes_on_cpu(tiny, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "defocus_lit.cli",
        "train",
        "pix2pix_4ch",
        *tiny,
        "run=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "model.norm=instance",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(tmp_path / "outputs" / "pix2pix_4ch" / "ddp")
    psnr = [float(r["val/psnr"]) for r in rows if r.get("val/psnr")]
    assert psnr and all(0 < p < 100 for p in psnr)
    assert "gloo" in proc.stderr + proc.stdout or "distributed_backend=gloo" in proc.stderr


def test_each_run_gets_its_own_wandb_run_and_resume_keeps_it(tiny):
    words = [w for w in tiny if not w.startswith("logger.wandb")] + ["logger.wandb=offline"]
    first = run_training(load_experiment("pix2pix_4ch", words + ["run=a"], cpu_preset=True))
    second = run_training(load_experiment("pix2pix_4ch", words + ["run=b"], cpu_preset=True))
    ids = [(r.run_dir / "wandb_id.txt").read_text() for r in (first, second)]
    assert all(ids) and ids[0] != ids[1]
    assert list((second.run_dir / "wandb").glob(f"offline-run-*-{ids[1]}"))
    resumed = run_training(
        load_experiment("pix2pix_4ch", words + ["resume=true", "trainer.max_epochs=2"], cpu_preset=True)
    )
    assert (resumed.run_dir / "wandb_id.txt").read_text() == ids[1]


def test_ddp_validation_counts_every_sample_once(tiny, tmp_path):
    """5 validation samples on 2 gloo processes (shares of 3 and 2, evened out with a ghost) give the metrics of
    1 process: no sample repeated, none lost. lr 0 and instance norm keep the model identical in both runs."""
    import h5py
    import numpy as np

    from defocus_lit.data.build import build_dataset
    from defocus_lit.data.sources import open_source
    from defocus_lit.render import RenderSettings

    path = tmp_path / "five.h5"
    source = open_source("synthetic", num=8, size=(64, 64), seed=2)
    build_dataset(source, path, settings=RenderSettings(layers=8), progress=False, workers=0)
    with h5py.File(path, "r+") as f:
        assert len(f["split"]) >= 8
        split = np.zeros(len(f["split"]), np.uint8)
        split[-5:] = 1
        f["split"][...] = split
    words = [w for w in tiny if not w.startswith("trainer.limit_val_batches")]
    words += [f"data.path={path}", "optim.lr=0", "model.norm=instance", "trainer.accelerator=cpu"]
    metrics = {}
    for devices in (1, 2):
        cmd = [sys.executable, "-m", "defocus_lit.cli", "train", "pix2pix_4ch", *words, f"trainer.devices={devices}"]
        proc = subprocess.run([*cmd, f"run=d{devices}"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((tmp_path / "outputs" / "pix2pix_4ch" / f"d{devices}" / "summary.json").read_text())
        metrics[devices] = {k: v for k, v in summary["metrics"].items() if "/val/" in k or k.startswith("val/")}
    assert set(metrics[1]) == set(metrics[2]) and "val/psnr" in metrics[1]
    for key, value in metrics[1].items():
        assert metrics[2][key] == pytest.approx(value, rel=1e-4, abs=1e-4), key


def test_last_checkpoint_is_written_after_every_epoch(tiny):
    """`resume=true` continues from last.ckpt: it must hold the latest epoch, not the latest best one."""
    result = run_training(
        load_experiment("pix2pix_4ch", tiny + ["trainer.max_epochs=3", "optim.lr=0.5"], cpu_preset=True)
    )
    state = torch.load(result.last_ckpt, weights_only=False)
    assert result.last_ckpt.name == "last.ckpt" and state["epoch"] == 2
    assert [p.name for p in result.last_ckpt.parent.glob("last*")] == ["last.ckpt"]


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error")]


@pytest.mark.parametrize(
    "word, says",
    [
        ("trainer.devices=abc", "trainer: `devices`"),
        ("trainer.max_epochs=x", "trainer.max_epochs: expected an integer or null, got 'x' (override)"),
        ("trainer.strategy=nope", "trainer: You selected an invalid strategy name"),
    ],
)
def test_bad_trainer_argument_is_one_error_and_writes_nothing(word, says, tiny, tmp_path, capsys):
    assert main(["train", "pix2pix_4ch", *tiny, "cpu_preset=true", word]) == 2
    err = capsys.readouterr().err
    assert len(_error_lines(err)) == 1 and says in _error_lines(err)[0] and "Traceback" not in err
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "data").exists()  # the Trainer came first


def test_output_dir_under_a_file_is_one_error(tiny, tmp_path, capsys):
    (tmp_path / "outputs").write_text("a file")
    assert main(["train", "pix2pix_4ch", *tiny, "cpu_preset=true"]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "outputs" in err[0] and "cannot create this folder" in err[0]


def test_a_failed_start_removes_the_run_folder(tiny, tmp_path):
    class Boom(L.Callback):
        def on_train_start(self, trainer, pl_module):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_training(load_experiment("pix2pix_4ch", tiny, cpu_preset=True), callbacks=[Boom()])
    assert not (tmp_path / "outputs").exists()


def test_fast_dev_run_trains_and_validates_one_batch_and_writes_nothing(tiny, tmp_path, capsys):
    class Count(L.Callback):
        batches = {"train": 0, "val": 0}

        def on_train_batch_end(self, *args):
            self.batches["train"] += 1

        def on_validation_batch_end(self, *args):
            self.batches["val"] += 1

    count = Count()
    result = run_training(
        load_experiment("patch_mask", tiny + ["trainer.fast_dev_run=true"], cpu_preset=True), callbacks=[count]
    )
    assert count.batches == {"train": 1, "val": 1} and result.run_dir is None
    assert main(["train", "patch_mask", *tiny, "cpu_preset=true", "trainer.fast_dev_run=true"]) == 0
    assert "fast_dev_run" in capsys.readouterr().out
    assert not (tmp_path / "outputs").exists()


def test_kill_9_during_training_then_resume_continues_from_last_ckpt(tiny, tmp_path):
    """A run killed with SIGKILL (no chance to save or clean up) continues from its last.ckpt: the resumed loop
    starts at that checkpoint's global step and the run finishes its epochs."""
    run_dir = tmp_path / "outputs" / "pix2pix_4ch" / "k"
    last = run_dir / "checkpoints" / "last.ckpt"
    cmd = [sys.executable, "-m", "defocus_lit.cli", "train", "pix2pix_4ch", *tiny, "cpu_preset=true", "run=k"]
    proc = subprocess.Popen(
        [*cmd, "trainer.max_epochs=1000"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (last.is_file() and torch.load(last, weights_only=False)["epoch"] >= 0):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    killed = torch.load(last, weights_only=False)
    per_epoch = killed["global_step"] // (killed["epoch"] + 1)
    assert per_epoch == 2  # 2 batches, one G step each (the CPU preset has no GAN term: no D step)

    class StartStep(L.Callback):
        step = None

        def on_train_start(self, trainer, pl_module):
            self.step = trainer.global_step

    start, epochs = StartStep(), killed["epoch"] + 3
    words = [*tiny, "resume=true", f"trainer.max_epochs={epochs}"]
    result = run_training(load_experiment("pix2pix_4ch", words, cpu_preset=True), callbacks=[start])
    assert result.run_dir == run_dir and start.step == killed["global_step"]
    final = torch.load(result.last_ckpt, weights_only=False)
    assert final["global_step"] == epochs * per_epoch  # last.ckpt is the finished run, whatever its val/psnr
    assert (run_dir / "summary.json").is_file()


def test_without_the_gan_term_the_discriminator_is_left_alone(tiny):
    """The CPU preset's loss.gan_weight=0: G trains on its reconstruction terms only and D is neither run nor
    trained (no loss_d, no D accuracy), so its weights stay at their initial values."""
    cfg = load_experiment("pix2pix_4ch", tiny, cpu_preset=True)
    assert cfg.loss.gan_weight == 0
    result = run_training(cfg)
    state = torch.load(result.last_ckpt, weights_only=False)["state_dict"]
    torch.manual_seed(cfg.seed)
    initial = build_module(cfg).state_dict()
    d_keys = [k for k in state if k.startswith("discriminator.") and state[k].is_floating_point()]
    assert d_keys and all(torch.equal(state[k], initial[k]) for k in d_keys)
    columns = set().union(*read_metrics(result.run_dir))
    assert "train/loss_g_epoch" in columns and not {c for c in columns if "loss_d" in c or "d_acc" in c}


def test_radius_loss_trains_on_the_stored_radius(tiny):
    result = run_training(
        load_experiment("patch_mask", [*tiny, "loss.terms={l1: 50.0, radius_l1: 1.0}"], cpu_preset=True)
    )
    rows = read_metrics(result.run_dir)
    values = [float(r["train/radius_l1_epoch"]) for r in rows if r.get("train/radius_l1_epoch")]
    assert values and 0 < values[0] < 16  # mean |expected - rendered radius| in px, below the largest radius


def test_training_tells_the_generator_each_target_amount_or_unknown(tiny, monkeypatch):
    """The generator is told each training target's amount (its mean blur radius out of focus, px), or "unknown"
    (nan) for a share of the samples (data.unknown_amount); with data.strength_range the told targets are rendered
    again at other strengths, so their amounts spread wider. Validation also scores the model told the amount."""
    from defocus_lit.models.checkpoint import load_checkpoint
    from defocus_lit.models.defocuser import Defocuser

    told = []
    stages = Defocuser.stages
    monkeypatch.setattr(Defocuser, "stages", lambda self, *args: told.append(args[2:]) or stages(self, *args))
    words = [*tiny, "trainer.limit_train_batches=6", "data.unknown_amount=0.5", "data.strength_range=[0.5,2]"]
    result = run_training(load_experiment("patch_mask", words, cpu_preset=True))
    amounts = torch.cat([args[0] for args in told if args and args[0] is not None])
    assert amounts.numel() >= 12 and 0 < amounts.isnan().sum() < amounts.numel() - 4  # validation: always told
    assert (amounts[~amounts.isnan()] > 0).all()
    model, cfg = load_checkpoint(result.best_ckpt)
    assert model.amount_input and cfg.data.unknown_amount == 0.5
    assert {"val/told_psnr_defocus", "val/told_oracle_gap"} <= set(result.metrics)
    with pytest.raises(UserError, match=r"^data\.strength_range: .* needs model\.amount_input=true"):
        load_experiment("patch_mask", [*tiny, "model.amount_input=false", "data.strength_range=[0.5,2]"])


def test_told_amounts_change_the_output_amount_in_the_right_direction(tiny):
    """A tiny model trained a few hundred steps, always told the amount: asked for more blur it draws more, on a
    validation frame it never trained on."""
    from defocus_lit.data.datamodule import DefocusDataModule
    from defocus_lit.models.checkpoint import load_checkpoint
    from defocus_lit.models.inference import amount_percent

    words = [*tiny, "trainer.max_epochs=8", "trainer.limit_train_batches=25", "data.unknown_amount=0"]
    result = run_training(load_experiment("pix2pix_4ch", [*words, "loss.terms={l1: 100.0, radius_l1: 1.0}"]))
    model, cfg = load_checkpoint(result.best_ckpt)
    dm = DefocusDataModule(cfg.data.path or str(next(Path("data").glob("*.h5"))), batch_size=1, crop_size=None)
    batch = next(iter(dm.val_dataloader()))
    drawn = []
    with torch.no_grad():
        for amount in (1.0, 3.0, 8.0):
            radius = model.stages(batch["image"], batch["mask"], amount)["radius"]
            drawn.append(float(amount_percent(radius, batch["mask"])[0]))
    assert drawn[0] < drawn[1] < drawn[2], drawn
