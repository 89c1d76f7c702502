"""The four LightningModules (architectures I-IV) and the GAN step they share.

A module builds its Defocuser (generator named by its architecture, output head, keep-focus); `GANStepMixin` holds
the pix2pix step (D then G, manual optimisation), the schedule and the model's validation metrics. What is not
the step (baselines, image grids, best values) lives in `defocus_lit.models.callbacks`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from defocus_lit.errors import UserError
from defocus_lit.losses import USES, GANLoss, get_loss, weighted_sum
from defocus_lit.metrics import DefocusMetrics, MetricSet
from defocus_lit.models.defocuser import Defocuser, build_defocuser
from defocus_lit.models.networks import build_discriminator


def told_of(batch: dict[str, Tensor]) -> Tensor | None:
    """(B,) what the generator is told of the batch's amounts: each sample's, nan where it is told "unknown"."""
    if "amount" not in batch:
        return None
    told = batch.get("amount_told", torch.ones_like(batch["amount"], dtype=torch.bool))
    return torch.where(told, batch["amount"], torch.full_like(batch["amount"], math.nan))


def pix2pix_lambda(max_epochs: int | None, decay_fraction: float):
    """The pix2pix schedule: lr factor 1 for the first epochs, then linear decay towards 0 (per epoch)."""
    if not max_epochs or max_epochs < 0:
        return lambda epoch: 1.0
    n_decay = round(max_epochs * decay_fraction)
    n_constant = max_epochs - n_decay
    return lambda epoch: 1.0 - max(0, epoch + 1 - n_constant) / float(n_decay + 1)


class GANStepMixin:
    """pix2pix training for a module that sets `self.defocuser` (generator + output head + keep-focus)."""

    automatic_optimization = False
    cfg: DictConfig
    defocuser: Defocuser

    @property
    def generator(self) -> nn.Module:
        return self.defocuser.generator

    def setup_gan(self, cfg: dict[str, Any]) -> None:
        self.save_hyperparameters({"cfg": cfg})
        self.cfg = OmegaConf.create(cfg)
        m = self.cfg.model
        self.discriminator = build_discriminator(in_channels=7, ndf=m.ndf, n_layers=m.d_layers, norm=m.norm)
        self.gan_loss = GANLoss(self.cfg.loss.gan_mode)
        for name in self.cfg.loss.terms:
            get_loss(name)  # an unknown term fails here, before any training
            if USES[name] == "radius" and self.defocuser.head is None:
                raise UserError(
                    f"loss.terms.{name}: needs a blur head's radius (model.head: blur_spread or blur_stack)"
                )
        self.val_metrics = MetricSet(prefix="val/")
        self.val_told = DefocusMetrics() if self.defocuser.amount_input else None
        self.on_train_epoch_start()

    # ----- generation -------------------------------------------------------------------------------------------
    def outputs(self, image: Tensor, mask: Tensor, amount: Tensor | None = None) -> dict[str, Tensor]:
        """Every stage's output (B,3,H,W) in [-1,1], the final one under "output" (see `Defocuser.stages`);
        `amount` (B,): the amount each sample is told (its target's mean blur radius out of focus, px; nan or None =
        unknown)."""
        return self.defocuser.stages(image, mask, amount)

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        """image (B,3,H,W) in [-1,1], mask (B,1,H,W) in [0,1] (0 = keep sharp) -> defocused (B,3,H,W) in [-1,1]."""
        return self.defocuser(image, mask)

    # ----- training ---------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.cfg.optim
        make = lambda params: torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2))  # noqa: E731
        opt_g, opt_d = make(self.generator.parameters()), make(self.discriminator.parameters())
        factor = pix2pix_lambda(self.trainer.max_epochs, o.decay_fraction)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (opt_g, opt_d)]
        return [opt_g, opt_d], schedulers

    def _discriminate(self, image: Tensor, mask: Tensor, output: Tensor) -> Tensor:
        return self.discriminator(torch.cat([image, mask, output], dim=1))

    def _step(self, optimizer, loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.cfg.optim.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.cfg.optim.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()

    def reconstruction_loss(self, outs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        total, terms = weighted_sum(self.cfg.loss.terms, outs["output"], batch, outs.get("radius"))
        if "coarse" in outs:
            coarse, coarse_terms = weighted_sum(self.cfg.loss.terms, outs["coarse"], batch)
            total = total + self.cfg.loss.coarse_weight * coarse
            terms.update({f"coarse_{k}": v for k, v in coarse_terms.items()})
        return total, terms

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """D then G, as the reference pix2pix. With `loss.gan_weight` 0 (the CPU preset) D takes no part: neither
        trained nor asked."""
        opt_g, opt_d = self.optimizers()
        image, mask = batch["image"], batch["mask"]
        outs = self.outputs(image, mask, told_of(batch))
        gan_weight = self.cfg.loss.gan_weight
        logs = self._discriminator_step(opt_d, batch, outs["output"]) if gan_weight else {}

        self.toggle_optimizer(opt_g)
        loss_g, terms = self.reconstruction_loss(outs, batch)
        if gan_weight:
            logs["train/gan_g"] = self.gan_loss(
                self._discriminate(image, mask, outs["output"]), True, for_discriminator=False
            )
            loss_g = loss_g + gan_weight * logs["train/gan_g"]
        self._step(opt_g, loss_g)
        self.untoggle_optimizer(opt_g)
        train_terms = {f"train/{name}": value for name, value in terms.items()}
        self._log_train({"train/loss_g": loss_g, **logs, **train_terms}, image.shape[0])

    def _discriminator_step(self, opt_d, batch: dict[str, Tensor], fake: Tensor) -> dict[str, Tensor]:
        """One D step on the batch's targets (real) and `fake` (detached); its loss and patch accuracies."""
        image, mask = batch["image"], batch["mask"]
        self.toggle_optimizer(opt_d)
        real_logits = self._discriminate(image, mask, batch["target"])
        fake_logits = self._discriminate(image, mask, fake.detach())
        loss_d = 0.5 * (self.gan_loss(real_logits, True) + self.gan_loss(fake_logits, False))
        self._step(opt_d, loss_d)
        self.untoggle_optimizer(opt_d)
        return {
            "train/loss_d": loss_d,
            "train/d_acc_real": self.gan_loss.accuracy(real_logits.detach(), True),
            "train/d_acc_fake": self.gan_loss.accuracy(fake_logits.detach(), False),
        }

    def _log_train(self, values: dict[str, Tensor], batch_size: int) -> None:
        """Logs `values` as NAME_step on the Trainer's logging steps (`log_every_n_steps`) and their epoch means as
        NAME_epoch at the epoch's end (the names `self.log(on_step=True, on_epoch=True)` gives). Why not that call:
        `self.log` costs about a millisecond per value per step on a CPU, as much as a tenth of a small network's
        step, so the epoch means come from one running sum instead."""
        stacked = torch.stack([v.detach().float() for v in values.values()]) * batch_size
        self._train_keys = list(values)
        self._train_sums = stacked if self._train_sums is None else self._train_sums + stacked
        self._train_count += batch_size
        if self.trainer._logger_connector.should_update_logs:
            progress = ("train/loss_g", "train/loss_d")
            self.log_dict({f"{k}_step": v.detach() for k, v in values.items() if k in progress}, prog_bar=True)
            self.log_dict({f"{k}_step": v.detach() for k, v in values.items() if k not in progress})

    def on_train_epoch_start(self) -> None:
        self._train_keys, self._train_sums, self._train_count = [], None, 0

    def on_train_epoch_end(self) -> None:
        if self._train_sums is not None:
            means = self._train_sums / self._train_count
            self.log_dict({f"{k}_epoch": v for k, v in zip(self._train_keys, means)}, prog_bar=False, sync_dist=True)
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if self.cfg.loss.gan_weight else schedulers[:1]:  # D untrained: lr as it was
            scheduler.step()
        self.log("train/lr", self.lr_schedulers()[0].get_last_lr()[0], on_epoch=True, on_step=False)

    # ----- validation -------------------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Scores the output with the amount the model guesses (`val/*`) for the sample's mask and, for plane
        sensitivity, for the opposite plane's mask; a model with the amount input also told the target's amount
        (`val/told_*`). Returns {"output": (B,3,H,W) in [-1,1]} (guessed) for the callbacks (image grid)."""
        out = self(batch["image"], batch["mask"])
        self.val_metrics.update(out, batch)
        self.val_metrics.update_plane(out, self(batch["image"], batch["alt_mask"]), batch)
        if self.val_told is not None:
            self.val_told.update(self.outputs(batch["image"], batch["mask"], batch["amount"])["output"], batch)
        return {"output": out}

    def told_metrics(self) -> dict[str, Tensor]:
        """The validation's image metrics of the model told each target's amount, as `val/told_NAME` (none without
        the amount input)."""
        if self.val_told is None:
            return {}
        return {f"val/told_{name}": value for name, value in self.val_told.compute().items()}

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.val_metrics.reset()
        values |= self.told_metrics()
        if self.val_told is not None:
            self.val_told.reset()
        self.log("val/psnr", values.pop("val/psnr"), prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)


class DefocusGAN(GANStepMixin, L.LightningModule):
    """Builds the Defocuser (generator named by `arch`, output head, keep-focus) and trains it as a GAN.
    The four architectures below are its subclasses, by name for users (`MODULES[cfg.arch]`)."""

    arch: ClassVar[str]

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.defocuser = build_defocuser({**cfg, "arch": self.arch})
        self.setup_gan(cfg)


class Pix2Pix4ch(DefocusGAN):
    """I: the reference U-Net on cat(image, mask)."""

    arch = "pix2pix_4ch"


class DualEncoder(DefocusGAN):
    """II: image and mask encoders fused at the bottleneck, one decoder, skips from the image encoder."""

    arch = "dual_encoder"


class DualSkip(DefocusGAN):
    """III: as II, but every skip carries image and mask features."""

    arch = "dual_skip"


class TwoStage(DefocusGAN):
    """IV: G1 coarse defocus, G2 residual refinement; its outputs include "coarse", and the losses apply to both
    stages."""

    arch = "two_stage"


MODULES: dict[str, type[DefocusGAN]] = {m.arch: m for m in (Pix2Pix4ch, DualEncoder, DualSkip, TwoStage)}


def build_module(cfg: DictConfig | dict) -> DefocusGAN:
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    return MODULES[cfg["arch"]](cfg)
