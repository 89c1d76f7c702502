"""Sweeps: the shipped sweep files validate; a W&B agent's words reach the config; an offline Optuna study runs
its trials, records them, and continues after being stopped."""

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from defocus_lit.cli import main
from defocus_lit.config import config_keys, experiment_names, experiments_dir, load_experiment
from defocus_lit.errors import UserError
from defocus_lit.sweeps import (
    WORKER_ATTR,
    PruningCallback,
    agent_words,
    trial_config,
    validate_sweep,
    worker_id,
)

SWEEPS = sorted((experiments_dir() / "sweeps").glob("*.yaml"))

TINY_SWEEP = """
method: random
metric: {name: val/psnr, goal: maximize}
command: ["${env}", defocus-lit, train, patch_mask, "${args_no_hyphens}"]
parameters:
  optim.lr: {values: [0.0001, 0.0002]}
  loss.terms.l1: {distribution: log_uniform_values, min: 10.0, max: 100.0}
"""


def wandb_words(point: dict) -> list[str]:
    """The words a W&B agent substitutes for ${args_no_hyphens} at `point`."""
    return create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})["args_no_hyphens"]


def first_point(sweep: dict) -> dict:
    specs = sweep["parameters"].items()
    return {k: s["values"][0] if "values" in s else s.get("value", s.get("min")) for k, s in specs}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_shipped_sweep_file_validates(path):
    sweep = validate_sweep(path)
    assert sweep["method"] in ("grid", "random", "bayes") and sweep["metric"]["goal"] in ("maximize", "minimize")
    keys = config_keys(trial_config(sweep, first_point(sweep)))
    for name, spec in sweep["parameters"].items():
        if name == "experiment":
            assert set(spec["values"]) <= set(experiment_names())
        else:
            assert name in keys


def test_the_two_sweeps_of_the_issue_ship():
    lr = validate_sweep(experiments_dir() / "sweeps" / "lr_lambda.yaml")
    assert lr["method"] == "bayes" and lr["metric"] == {"name": "val/psnr", "goal": "maximize"}
    assert lr["command"] == ["${env}", "defocus-lit", "train", "patch_mask", "${args_no_hyphens}"]
    assert lr["parameters"]["optim.lr"]["distribution"] == "log_uniform_values"
    assert "loss.terms.l1" in lr["parameters"]
    arch = validate_sweep(experiments_dir() / "sweeps" / "arch.yaml")
    assert arch["method"] == "grid" and arch["command"][-2:] == ["train", "${args_no_hyphens}"]
    assert set(arch["parameters"]["experiment"]["values"]) == {
        "pix2pix_4ch",
        "uniform_l1",
        "focus_penalty",
        "patch_mask",
        "two_stage",
    }


def test_agent_words_parse_into_the_config():
    point = {"optim.lr": 1.2345e-05, "loss.terms.l1": 73.5, "data.photometric": False, "model.ngf": 8}
    words = wandb_words(point)
    assert agent_words(point) == words  # the Optuna backend passes what a W&B agent passes
    cfg = load_experiment("patch_mask", words)  # = `defocus-lit train patch_mask WORDS`
    assert cfg.optim.lr == pytest.approx(1.2345e-05) and cfg.loss.terms.l1 == 73.5
    assert cfg.data.photometric is False and cfg.model.ngf == 8 and cfg.loss.terms.depth_weighted_l1 > 0
    arch = validate_sweep(experiments_dir() / "sweeps" / "arch.yaml")
    for exp in arch["parameters"]["experiment"]["values"]:
        cfg = trial_config(arch, {"optim.lr": 0.0003, "experiment": exp})  # experiment= after a key=value word
        assert cfg.name == exp and cfg.optim.lr == pytest.approx(0.0003)


@pytest.mark.parametrize(
    "change, named",
    [
        (("optim.lr: {values: [0.0001, 0.0002]}", "optim.lrr: {values: [0.0001]}"), "optim.lrr"),
        (("distribution: log_uniform_values", "distribution: normal"), "normal"),
        (("method: random", "method: hyperband"), "method"),
        (("method: random", "method: grid"), "loss.terms.l1"),
        (("min: 10.0", "min: 1e1"), "loss.terms.l1"),
        (("patch_mask,", "pix2pix_5ch,"), "pix2pix_5ch"),
        (("optim.lr: {values: [0.0001, 0.0002]}", "data.crop_size: {values: [64, 100]}"), "data.crop_size"),
        (("val/psnr", "psnr"), "metric"),
    ],
)
def test_a_bad_sweep_file_is_an_error_naming_file_and_key(tmp_path, change, named):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY_SWEEP.replace(*change))
    with pytest.raises(UserError, match=named) as err:
        validate_sweep(path)
    assert str(path) in str(err.value)


def test_wandb_backend_while_offline_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["sweep", str(experiments_dir() / "sweeps" / "lr_lambda.yaml"), "--backend", "wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: W&B is offline") and err.endswith("with --backend optuna") and "\n" not in err


def test_pruning_callback_reports_each_validation_and_prunes():
    reports = []
    trial = SimpleNamespace(report=lambda value, step: reports.append((step, value)), should_prune=lambda: True)
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=3, callback_metrics={"val/psnr": torch.tensor(2.5)})
    with pytest.raises(optuna.TrialPruned):
        PruningCallback(trial, "val/psnr").on_validation_end(trainer, None)
    assert reports == [(3, 2.5)]


def sweep_cli(tmp_path: Path, tiny: list[str], *args: str) -> int:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SWEEP)
    words = [w for w in tiny if not w.startswith("output_dir=")] + ["trainer.limit_val_batches=1"]
    return main(["sweep", str(path), *args, *words])


def load_study(study_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{study_dir / 'study.db'}")


def test_offline_study_runs_and_records_every_trial(tmp_path, tiny, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")  # the default backend is then optuna
    assert sweep_cli(tmp_path, tiny, "--trials", "2") == 0
    study_dir = tmp_path / "outputs" / "sweeps" / "tiny"
    trials = load_study(study_dir).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t in trials:
        assert t.distributions["optim.lr"] == optuna.distributions.CategoricalDistribution([0.0001, 0.0002])
        assert t.distributions["loss.terms.l1"] == optuna.distributions.FloatDistribution(10.0, 100.0, log=True)
        summary = json.loads((study_dir / "patch_mask" / f"trial_{t.number:03d}" / "summary.json").read_text())
        assert t.value == pytest.approx(summary["metrics"]["val/psnr"])
        assert 0 in t.intermediate_values  # val/psnr reported per epoch for pruning
    best = json.loads((study_dir / "best.json").read_text())
    assert best["value"] == max(t.value for t in trials) and set(best["params"]) == {"optim.lr", "loss.terms.l1"}
    assert best["command"].startswith("defocus-lit train patch_mask ")
    out = capsys.readouterr().out
    assert out.count("COMPLETE") == 2 and "best: trial" in out


def test_a_stopped_study_continues_and_reruns_an_orphaned_trial(tmp_path, tiny):
    study_dir = tmp_path / "study"
    assert sweep_cli(tmp_path, tiny, "--backend", "optuna", "--trials", "1", "--study-dir", str(study_dir)) == 0
    orphan = load_study(study_dir).ask()  # a trial whose process was killed: RUNNING, its pid gone
    orphan.suggest_categorical("optim.lr", [0.0001, 0.0002])
    orphan.suggest_float("loss.terms.l1", 10.0, 100.0, log=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan.set_user_attr(WORKER_ATTR, worker_id(gone.pid))

    assert sweep_cli(tmp_path, tiny, "--backend", "optuna", "--trials", "2", "--study-dir", str(study_dir)) == 0
    trials = load_study(study_dir).trials
    states = optuna.trial.TrialState
    assert [t.state for t in trials] == [states.COMPLETE, states.FAIL, states.COMPLETE]
    assert trials[2].params == trials[1].params  # the orphan's point ran again
    assert sorted(p.name for p in (study_dir / "patch_mask").iterdir()) == ["trial_000", "trial_002"]
    assert sweep_cli(tmp_path, tiny, "--backend", "optuna", "--trials", "2", "--study-dir", str(study_dir)) == 0
    assert len(load_study(study_dir).trials) == 3  # already done: nothing more runs


def test_wandb_backend_registers_the_file_with_fixed_words_in_its_command(monkeypatch, tmp_path):
    import wandb

    import defocus_lit.sweeps as sweep_module

    calls = {}

    def fake_sweep(config, project):
        calls["sweep"] = config, project
        return "sweep-id"

    def fake_agent(sweep_id, project, count):
        calls["agent"] = sweep_id, count

    monkeypatch.setattr(sweep_module, "wandb_mode", lambda setting: "online")  # W&B online: the default backend
    monkeypatch.setattr(wandb, "sweep", fake_sweep)
    monkeypatch.setattr(wandb, "agent", fake_agent)
    arch = experiments_dir() / "sweeps" / "arch.yaml"
    assert main(["sweep", str(arch), "--study-dir", str(tmp_path), "trainer.max_epochs=1"]) == 0
    config, project = calls["sweep"]
    assert config["command"] == [
        "${env}",
        "defocus-lit",
        "train",
        "trainer.max_epochs=1",
        f"output_dir={tmp_path}",
        "${args_no_hyphens}",
    ]
    assert project == "defocus_lit" and config["method"] == "grid" and calls["agent"] == ("sweep-id", 5)
