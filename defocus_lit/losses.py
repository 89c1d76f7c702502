"""The loss registry and the GAN losses.

A reconstruction term is one function decorated with ``@register_loss("name")``: ``(pred, batch) -> scalar`` with
``pred (B,3,H,W) in [-1,1]`` and the datamodule's batch dict (``target`` (B,3,H,W) in [-1,1]; ``valid``, ``focus``,
``depth_weight`` (B,1,H,W)). Every term averages only over ``batch["valid"]`` pixels (all pixels when absent), so
padding and pixels without a depth measurement never count. Experiments list terms with weights
(``loss.terms.<name>: weight``), summed by :func:`weighted_sum`.

A term registered with ``uses="radius"`` is given the blur-stack head's expected blur radius (B,1,H,W) in px instead
of the image, and compares it with the renderer's (``batch["radius"]``): in a flat region an image loss carries no
signal about how much blur a pixel needs, the radius does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from defocus_lit.errors import UserError

LossFn = Callable[[Tensor, dict], Tensor]
LOSSES: dict[str, LossFn] = {}
USES: dict[str, str] = {}  # term name -> what it is given: "image" (B,3,H,W) or "radius" (B,1,H,W)
READS_RADIUS: set[str] = set()  # terms that read the renderer's radius map, batch["radius"]
PAPER_DEPTH_WEIGHT_SCALE = 2000.0  # the paper's weighted L1 scales the 0..1 depth weight to 0..2000


def register_loss(name: str, uses: str = "image", reads_radius: bool = False) -> Callable[[LossFn], LossFn]:
    """Decorator that makes a term usable by name in experiments (``loss.terms.<name>``); `uses`: "image" (the
    stage's output) or "radius" (the head's expected blur radius); `reads_radius`: the term compares with the
    renderer's radius map, which the data then serves (batch["radius"])."""
    if uses not in ("image", "radius"):
        raise ValueError(f"loss {name!r}: uses must be 'image' or 'radius', not {uses!r}")

    def add(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        LOSSES[name] = fn
        USES[name] = uses
        if reads_radius:
            READS_RADIUS.add(name)
        return fn

    return add


def get_loss(name: str) -> LossFn:
    if name not in LOSSES:
        raise UserError(f"loss.terms.{name}: unknown loss term; registered: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def masked_mean(values: Tensor, weight: Tensor) -> Tensor:
    """sum(values * weight) / (sum(weight) * C), values (B,C,H,W), weight (B,1,H,W); 0 when the weight is all 0."""
    weight = weight.to(values.dtype)
    total = (values * weight).sum()
    count = weight.sum() * values.shape[1]
    return total / count.clamp_min(1e-8)


def _valid(pred: Tensor, batch: dict) -> Tensor:
    """(B,1,H,W) 1 where the pixel counts; ``batch["valid"]`` or all ones."""
    valid = batch.get("valid")
    return torch.ones_like(pred[:, :1]) if valid is None else valid.to(pred.dtype)


@register_loss("l1")
def l1(pred: Tensor, batch: dict) -> Tensor:
    """Mean |pred - target| over valid pixels."""
    return masked_mean((pred - batch["target"]).abs(), _valid(pred, batch))


@register_loss("focus_l1")
def focus_l1(pred: Tensor, batch: dict) -> Tensor:
    """Mean |pred - target| over valid pixels of the in-focus region (``focus == 1``): an extra penalty there."""
    return masked_mean((pred - batch["target"]).abs(), _valid(pred, batch) * batch["focus"].to(pred.dtype))


@register_loss("depth_weighted_l1")
def depth_weighted_l1(pred: Tensor, batch: dict) -> Tensor:
    """The paper's weighted L1: mean over valid pixels of (depth_weight * 2000) * |pred - target|.

    The weight is 1 in focus and falls with distance from the focal plane; at the paper's scale (0..2000) the term
    is about 1000x ``l1`` (a mean weight of ~0.5 times 2000), so an experiment gives it ~1/1000 of the weight it
    would give ``l1`` (experiments/patch_mask.yaml: 0.05 against l1's 100).
    """
    weight = batch["depth_weight"].to(pred.dtype) * PAPER_DEPTH_WEIGHT_SCALE
    return masked_mean(weight * (pred - batch["target"]).abs(), _valid(pred, batch))


@register_loss("ssim")
def ssim(pred: Tensor, batch: dict) -> Tensor:
    """1 - SSIM averaged over valid pixels of the per-pixel SSIM map (torchmetrics: Gaussian 11x11, sigma 1.5).

    SSIM is computed on images mapped to [0,1] with data_range=1.0, the standard convention (its luminance
    term is not shift-invariant, so [-1,1] with data_range 2 would give other values). H and W must exceed 5.
    """
    _, ssim_map = structural_similarity_index_measure(
        (pred + 1) / 2, (batch["target"] + 1) / 2, data_range=1.0, return_full_image=True
    )
    return 1 - masked_mean(ssim_map, _valid(pred, batch))


@register_loss("log_mse")
def log_mse(pred: Tensor, batch: dict) -> Tensor:
    """Mean over the samples of 10 log10(MSE over the sample's valid pixels out of focus), images in [0,1]: minus
    the psnr_defocus the metrics average, so an error counts relative to its sample's (a 1-px error on a barely
    blurred sample as much as a 4-px one on a strongly blurred one), as the mean PSNR weighs them. Without a
    ``focus`` map, over all valid pixels."""
    weight = _valid(pred, batch)
    if "focus" in batch:
        weight = weight * (1 - batch["focus"].to(pred.dtype))
    squared = ((pred - batch["target"]) / 2).square().mean(dim=1, keepdim=True) * weight
    mse = squared.flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1)
    return (10 * torch.log10(mse + 1e-6)).mean()


@register_loss("radius_l1", uses="radius", reads_radius=True)
def radius_l1(radius: Tensor, batch: dict) -> Tensor:
    """Mean |radius - batch["radius"]| in px over valid pixels: the head's expected blur radius against the
    renderer's, the direct supervision of how much blur each pixel gets."""
    return masked_mean((radius - batch["radius"]).abs(), _valid(radius, batch))


@register_loss("radius_shape", uses="radius", reads_radius=True)
def radius_shape(radius: Tensor, batch: dict) -> Tensor:
    """Mean over the samples of |radius / its mean - target / its mean| over the sample's valid pixels out of focus:
    where a sample blurs more and where less, whatever its amount. The amount (how far the scene is, in metres) is
    what real photos tell least; the depth order within a scene transfers, and a pixel L1 carries little signal
    about it in flat regions. Both radii (B,1,H,W) px; a sample's mean is floored at 0.5 px."""
    weight = _valid(radius, batch)
    if "focus" in batch:
        weight = weight * (1 - batch["focus"].to(radius.dtype))
    count = weight.flatten(1).sum(1).clamp_min(1)

    def relative(r: Tensor) -> Tensor:
        mean = (r * weight).flatten(1).sum(1) / count
        return r / mean.clamp_min(0.5).view(-1, 1, 1, 1)

    per_sample = ((relative(radius) - relative(batch["radius"])).abs() * weight).flatten(1).sum(1) / count
    return per_sample.mean()


@register_loss("amount_log", uses="radius")
def amount_log(radius: Tensor, batch: dict) -> Tensor:
    """Mean over the samples of |log((a + 1) / (A + 1))|, a the head's expected radius averaged over the sample's
    pixels out of focus and A the target's, batch["amount"] (px): the amount of blur the output has against the one
    it should have, relative (a 10 % error weighs the same on a small and a large amount). Told the amount, the
    model learns to draw it; not told, to guess it."""
    blurred = 1 - batch["focus"].to(radius.dtype)
    drawn = (radius * blurred).flatten(1).sum(1) / blurred.flatten(1).sum(1).clamp_min(1)
    return (torch.log1p(drawn) - torch.log1p(batch["amount"].to(radius.dtype))).abs().mean()


def weighted_sum(
    terms: Mapping[str, float], pred: Tensor, batch: dict, radius: Tensor | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """(sum of weight * term, {name: unweighted term value}) over the named terms. Image terms get `pred`
    (B,3,H,W), radius terms `radius` (B,1,H,W) px; zero-weight terms, and radius terms when `radius` is None (a
    stage without a blur-stack head), are skipped."""
    inputs = {"image": pred, "radius": radius}
    fns = {name: get_loss(name) for name in terms}
    values = {
        name: fns[name](inputs[USES[name]], batch)
        for name, weight in terms.items()
        if weight != 0 and inputs[USES[name]] is not None
    }
    total = sum((terms[name] * value for name, value in values.items()), pred.new_zeros(()))
    return total, values


class GANLoss(nn.Module):
    """Adversarial loss on discriminator logits (any shape, e.g. PatchGAN (B,1,h,w)).

    ``vanilla``: BCE with logits against 1 (real) / 0 (fake); ``lsgan``: MSE against 1 / 0; ``hinge``: for the
    discriminator mean(relu(1 - x)) on real and mean(relu(1 + x)) on fake, for the generator -mean(x).
    """

    MODES = ("vanilla", "lsgan", "hinge")

    def __init__(self, mode: str = "vanilla"):
        super().__init__()
        if mode not in self.MODES:
            raise UserError(f"loss.gan_mode: unknown GAN mode {mode!r}; valid: {', '.join(self.MODES)}")
        self.mode = mode

    def accuracy(self, logits: Tensor, target_is_real: bool) -> Tensor:
        """The fraction of D's patch decisions that are right: logits above the midpoint between the real and fake
        targets (0; 0.5 for lsgan) count as "real". 0.5 = chance."""
        decided_real = logits > (0.5 if self.mode == "lsgan" else 0.0)
        return (decided_real == target_is_real).float().mean()

    def forward(self, logits: Tensor, target_is_real: bool, for_discriminator: bool = True) -> Tensor:
        if self.mode == "hinge":
            if not for_discriminator:
                if not target_is_real:
                    raise ValueError("hinge generator loss is defined for target_is_real=True only")
                return -logits.mean()
            return F.relu(1 - logits).mean() if target_is_real else F.relu(1 + logits).mean()
        target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
        if self.mode == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)
