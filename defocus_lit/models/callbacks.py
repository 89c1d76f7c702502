"""Lightning callbacks for the work around the GAN step: the baselines scored beside the model, the validation
image grid and the best validation values. Their state is kept in checkpoints under "defocus_lit"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from defocus_lit.baselines import BASELINES, alt_batch
from defocus_lit.io import write_rgb
from defocus_lit.metrics import MetricSet
from defocus_lit.visualize import panel_grid

CHECKPOINT_KEY = "defocus_lit"


def _extras(checkpoint: dict[str, Any]) -> dict[str, Any]:
    return checkpoint.setdefault(CHECKPOINT_KEY, {})


class BaselineMetrics(Callback):
    """Scores every baseline on the validation data once (the first real validation; they do not train) and logs
    their values as `baseline/NAME/val/METRIC` at every validation, so each run's logs hold the bar to beat."""

    def __init__(self) -> None:
        self.metrics = nn.ModuleDict({name: MetricSet(prefix=f"baseline/{name}/val/") for name in BASELINES})
        self.values: dict[str, float] = {}

    def _measuring(self, trainer: L.Trainer) -> bool:
        return not self.values and not trainer.sanity_checking

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._measuring(trainer):
            return
        self.metrics.to(pl_module.device)
        for name, baseline in BASELINES.items():
            output = baseline(batch)
            self.metrics[name].update(output, batch)
            self.metrics[name].update_plane(output, baseline(alt_batch(batch)), batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self._measuring(trainer):
            for metrics in self.metrics.values():
                self.values.update({k: float(v) for k, v in metrics.compute().items()})
                metrics.reset()
        if self.values:
            pl_module.log_dict(self.values, sync_dist=True)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        _extras(checkpoint)["baselines"] = dict(self.values)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.values = dict(checkpoint.get(CHECKPOINT_KEY, {}).get("baselines", {}))


class BestMetrics(Callback):
    """The `val/*` values of the validation with the best `val/psnr` (and its epoch): the run's summary."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if "val/psnr" in values and (not self.values or values["val/psnr"] > self.values["val/psnr"]):
            self.values = values | {"epoch": float(trainer.current_epoch)}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        _extras(checkpoint)["best"] = dict(self.values)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.values = dict(checkpoint.get(CHECKPOINT_KEY, {}).get("best", {}))


class ValidationImages(Callback):
    """After every validation, the first `num_images` samples of the first batch as a grid (input | mask | output |
    target): a PNG under RUN/images/ and an image on every logger that takes images (W&B)."""

    def __init__(self, num_images: int) -> None:
        self.num_images = num_images
        self.rows: list[dict[str, Tensor]] = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or not outputs:
            return
        out = outputs["output"]
        self.rows = [
            {
                "input": batch["image"][i],
                "mask": batch["mask"][i] * 2 - 1,
                "output": out[i],
                "target": batch["target"][i],
            }
            for i in range(min(self.num_images, out.shape[0]))
        ]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.rows or trainer.global_rank != 0:
            return
        grid = panel_grid(self.rows)
        write_rgb(Path(trainer.default_root_dir) / "images" / f"val_epoch{trainer.current_epoch:03d}.png", grid)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(
                    key="val/samples",
                    images=[grid],
                    step=trainer.global_step,
                    caption=["input | mask | output | target"],
                )
