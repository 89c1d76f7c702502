"""Lightning callbacks for the work around the GAN step: the baselines scored beside the model, the validation
image grid and the best validation values. Their state is kept in checkpoints under "defocus_lit"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from defocus_lit.baselines import NAMES, GlobalBlur, alt_batch, baselines
from defocus_lit.io import write_rgb
from defocus_lit.metrics import MetricSet
from defocus_lit.models.checkpoint import CHECKPOINT_KEY
from defocus_lit.visualize import panel_grid

FIT_SAMPLES = 256  # training samples global_blur is fitted on (spread over the split)


def _extras(checkpoint: dict[str, Any]) -> dict[str, Any]:
    return checkpoint.setdefault(CHECKPOINT_KEY, {})


def gains(values: dict[str, float], prefix: str = "val/", variant: str = "") -> dict[str, float]:
    """depth_gain = psnr_defocus(model) - psnr_defocus(global_blur): what the model infers beyond the best
    image-blind blur; oracle_gap = psnr_defocus(model) - psnr_defocus(oracle_blur): >= 0 beats every uniform blur
    even one chosen knowing the target. `values` holds `{prefix}{variant}psnr_defocus` (variant "told_": the model
    told the target's amount) and the baselines' values; the gains are named `{prefix}{variant}NAME`."""
    model = values.get(f"{prefix}{variant}psnr_defocus")
    out = {}
    for name, baseline in (("depth_gain", "global_blur"), ("oracle_gap", "oracle_blur")):
        reference = values.get(f"baseline/{baseline}/{prefix}psnr_defocus")
        if model is not None and reference is not None:
            out[f"{prefix}{variant}{name}"] = float(model) - float(reference)
    return out


class BaselineMetrics(Callback):
    """The baselines beside the model (`defocus_lit.baselines`). At the start of training, global_blur's radii
    are fitted on the training split (kept in checkpoints, so evaluation on any data uses them). At the first real
    validation every baseline is scored (they do not train); from then on every validation logs their values as
    `baseline/NAME/val/METRIC` and the model's `val/depth_gain` and `val/oracle_gap`."""

    def __init__(self, max_radius: float) -> None:
        self.max_radius = max_radius
        self.global_blur: GlobalBlur | None = None
        self.values: dict[str, float] = {}
        self.metrics = nn.ModuleDict({name: MetricSet(prefix=f"baseline/{name}/val/") for name in NAMES})

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.global_blur is not None:  # restored from the checkpoint
            return
        batches = trainer.datamodule.fit_dataloader(limit=FIT_SAMPLES)
        self.global_blur = GlobalBlur.fit(batches, self.max_radius, pl_module.device)
        radii = ", ".join(f"level {level:g}: {r:g} px" for level, r in self.global_blur.radii.items())
        rank_zero_info(f"global_blur baseline fitted on the training split ({radii})")

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
        if not self._measuring(trainer) or self.global_blur is None:
            return
        self.metrics.to(pl_module.device)
        for name, baseline in baselines(self.global_blur, self.max_radius).items():
            output = baseline(batch)
            self.metrics[name].update(output, batch)
            self.metrics[name].update_plane(output, baseline(alt_batch(batch)), batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.global_blur is None:
            return
        if self._measuring(trainer):
            for metrics in self.metrics.values():
                self.values.update({k: float(v) for k, v in metrics.compute().items()})
                metrics.reset()
        model = {k: float(v) for k, v in pl_module.val_metrics.compute().items()}  # logged by the module itself
        model |= {k: float(v) for k, v in pl_module.told_metrics().items()}
        told = gains(model | self.values, variant="told_") if "val/told_psnr_defocus" in model else {}
        pl_module.log_dict(self.values | gains(model | self.values) | told, sync_dist=True)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        _extras(checkpoint)["baselines"] = dict(self.values)
        if self.global_blur is not None:
            _extras(checkpoint)["global_blur"] = {str(level): r for level, r in self.global_blur.radii.items()}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        extras = checkpoint.get(CHECKPOINT_KEY, {})
        self.values = dict(extras.get("baselines", {}))
        if "global_blur" in extras:
            self.global_blur = GlobalBlur({float(k): v for k, v in extras["global_blur"].items()})


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
