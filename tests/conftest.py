"""Shared test settings: a tiny network on tiny synthetic data, so a training run takes seconds."""

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

TINY = [
    "model.ngf=4",
    "model.num_downs=3",
    "model.ndf=4",
    "data.crop_size=32",
    "data.synthetic.num=6",
    "data.synthetic.size=[64,64]",
    "data.num_workers=0",
    "data.batch_size=2",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger.wandb=disabled",
    "render.layers=8",
]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """Overrides for a seconds-long run whose data cache and outputs live in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return TINY + [f"output_dir={tmp_path / 'outputs'}"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of a seconds-long pix2pix_4ch run, trained once per session (its synthetic dataset lies in
    data/ beside it)."""
    from defocus_lit.config import load_experiment
    from defocus_lit.training import run_training

    root = tmp_path_factory.getbasetemp() / "tiny_run"
    ckpt = root / "tiny.ckpt"
    if not ckpt.is_file():
        root.mkdir(exist_ok=True)
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            result = run_training(
                load_experiment("pix2pix_4ch", TINY + [f"output_dir={root / 'outputs'}"], cpu_preset=True)
            )
        shutil.copy(result.best_ckpt, ckpt)
    return ckpt
