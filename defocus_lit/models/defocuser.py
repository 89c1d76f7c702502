"""The deployable model: generator, optional blur-stack output head, and the keep-focus composite.

The LightningModules train one of these; `predict`, `evaluate` and `export` load one from a checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from defocus_lit.models.networks import build_generator
from defocus_lit.ops.blur import disk_stack, fft_blur, gaussian_blur, spread_blur
from defocus_lit.ops.color import linear_to_srgb, srgb_to_linear
from defocus_lit.ops.masks import blurred_levels, in_focus, keep_focus

HEADS = ("rgb", "blur_stack", "blur_spread")


def stack_radii(max_radius: float, levels: int) -> list[float]:
    """0 and then radii doubling up to `max_radius`: e.g. 16 px, 6 levels -> 0, 1, 2, 4, 8, 16."""
    return [0.0] + [max_radius * 2.0 ** (k - (levels - 2)) for k in range(levels - 1)]


class BlurStack(nn.Module):
    """Output head that defocuses by choosing, per pixel, among K disk blurs of the input photo.

    The generator's K channels (tanh, in [-1,1]) become softmax weights over K disks of radii `radii` (0 = sharp),
    in linear light. Colours therefore always come from the photo (no checkerboard, no colour cast) and the network
    learns what matters: how much blur each pixel gets given the image and the mask. Two ways to apply them:

    - spread (head `blur_spread`): the weights split the photo into K layers and each layer's pixels spread over
      their disk (`ops.blur.spread_blur`), in-focus pixels (the mask's) in the sharp layer: a blurred near object
      reaches past its outline, and a sharp subject's colour stays out of the blurred background, as in the
      renderer's layered targets;
    - gather (head `blur_stack`): each pixel takes the weighted sum of the whole photo blurred with each disk, so
      pixels next to a sharp subject average its colour in.

    `radius_scale` multiplies the radii: a photo defocused at k times the resolution the generator saw needs k times
    the radii for the same look. `strength` is the user's aperture: it multiplies every level's radius as it
    multiplies the renderer's thin-lens k, and, as the renderer clamps at max_radius, no level grows past the
    stack's top radius.
    """

    sharpness = 6.0  # tanh range [-1,1] -> logits [-6,6]: a weight can reach ~1 on one level

    def __init__(self, radii: Sequence[float], spread: bool = False) -> None:
        super().__init__()
        self.radii = [float(r) for r in radii]
        self.spread = spread

    @property
    def channels(self) -> int:
        return len(self.radii)

    def weights(self, raw: Tensor) -> Tensor:
        """raw (B,K,H,W) in [-1,1] -> the per-pixel weights of the K levels (B,K,H,W), summing to 1."""
        return torch.softmax(raw.float() * self.sharpness, dim=1)

    def level_radii(self, radius_scale: float = 1.0, strength: Tensor | float = 1.0) -> np.ndarray:
        """The levels' radii in px as applied, min(r * strength, top radius) * radius_scale: (K,) for one strength,
        (B,K) for one per sample (B,). In numpy, not torch: they size the kernels, so an exported model must see
        them as constants."""
        strength = strength.detach().float().cpu().numpy() if isinstance(strength, Tensor) else np.float32(strength)
        return np.minimum(np.asarray(self.radii, np.float32) * strength[..., None], max(self.radii)) * radius_scale

    def logits(self, weights: Tensor) -> Tensor:
        """The inverse of `weights`: (B,K,H,W) weights summing to 1 -> raw whose `weights` they are (up to 1e-6)."""
        return weights.clamp_min(1e-6).log() / self.sharpness

    def expected_radius(self, raw: Tensor, radius_scale: float = 1.0, strength: Tensor | float = 1.0) -> Tensor:
        """raw (B,K,H,W) -> (B,1,H,W): the weights times the level radii (`level_radii`), in px; at the
        generator's scale by default."""
        radii = torch.from_numpy(self.level_radii(radius_scale, strength)).to(raw).view(-1, self.channels, 1, 1)
        return (self.weights(raw) * radii).sum(dim=1, keepdim=True)

    @torch.no_grad()
    def fit_strength(self, raw: Tensor, mask: Tensor, amount: Tensor) -> Tensor:
        """(B,) the strength per sample at which the mean expected radius over the pixels `mask` (B,1,H,W) leaves
        out of focus is `amount` (B,) px (at radius scale 1): the mean is sum_k W_k min(r_k s, top), W_k the level's
        mean weight there, rising in s, so bisection finds it; an amount beyond reach (the weight on the sharp level
        r_0 = 0 does not grow) gets the largest strength, every level at the top radius."""
        blurred = 1 - in_focus(mask).to(raw.dtype)
        mass = (self.weights(raw) * blurred).sum((2, 3)) / blurred.sum((2, 3)).clamp_min(1)  # (B,K)
        radii, top = torch.tensor(self.radii, dtype=mass.dtype, device=mass.device), max(self.radii)
        low = torch.zeros_like(amount, dtype=mass.dtype)
        high = torch.full_like(low, top / min(r for r in self.radii if r > 0))
        for _ in range(30):  # the interval shrinks 2**30 times
            middle = (low + high) / 2
            short = (mass * (radii * middle[:, None]).clamp(max=top)).sum(1) < amount.to(mass.dtype)
            low, high = torch.where(short, middle, low), torch.where(short, high, middle)
        return (low + high) / 2

    def forward(
        self, image: Tensor, raw: Tensor, mask: Tensor, radius_scale: float = 1.0, strength: Tensor | float = 1.0
    ) -> Tensor:
        """image (B,3,H,W) in [-1,1]; raw (B,K,H,W) in [-1,1]; mask (B,1,H,W) in [0,1] (its in-focus pixels are
        the sharp layer when spreading) -> (B,3,H,W) in [-1,1], each level blurred by its `level_radii` radius
        (`strength` a number, or (B,) one per sample)."""
        linear = srgb_to_linear((image.float() + 1) / 2)
        radii = self.level_radii(radius_scale, strength)
        kernels = disk_stack(radii.ravel().tolist()).to(linear)
        per_sample = radii.ndim == 2
        if per_sample:
            kernels = kernels.view(*radii.shape, *kernels.shape[-2:])
        weights = self.weights(raw)
        if self.spread:
            focus = in_focus(mask).to(weights)
            layers = torch.cat([weights[:, :1] * (1 - focus) + focus, weights[:, 1:] * (1 - focus)], 1)
            out = spread_blur(linear, layers, kernels, per_sample=per_sample)
        else:
            out = (weights.unsqueeze(2) * fft_blur(linear, kernels)).sum(dim=1)
        return (linear_to_srgb(out.clamp(0, 1)) * 2 - 1).to(image.dtype)


def amount_code(amount: Tensor) -> Tensor:
    """The generator's amount channel for `amount` (B,) in the head's px (the mean blur radius out of focus to draw
    at radius scale 1; nan = unknown): log2(1 + px), > 0 for any amount, and 0 for "unknown"."""
    return torch.where(torch.isnan(amount), torch.zeros_like(amount), torch.log2(1 + amount.clamp_min(0)))


def told_amounts(amount: Tensor | float | None, batch: int, like: Tensor) -> Tensor:
    """`amount` (None, a number, or (B,); nan = unknown) as (B,) on `like`'s device and dtype."""
    amount = torch.as_tensor(math.nan if amount is None else amount, dtype=like.dtype, device=like.device)
    return amount.reshape(-1).expand(batch)


class Defocuser(nn.Module):
    """generator (+ head) (+ keep-focus composite): forward(image, mask) -> defocused image.

    The amount of blur: a model with `amount_input` takes, as one more constant mask channel (`amount_code`), the
    mean blur radius out of focus it is asked to draw, in the head's px, or "unknown", and then guesses one from the
    photo and the mask; it trained both ways (data.unknown_amount). Without the input it always guesses. With
    `exact_amount` (and a blur head) a told amount is drawn exactly: the head's radii are scaled per sample so that
    the mean expected radius out of focus is the amount (`BlurStack.fit_strength`), as the generator was trained
    with; the generator decides where the blur goes, the amount is the user's. The user's `strength` multiplies
    the amount used: a told amount is multiplied before the generator is told it (`inference`), a guessed one
    through the head's radii (`finish`)."""

    def __init__(
        self,
        generator: nn.Module,
        head: BlurStack | None,
        keep_focus: bool,
        multiple: int,
        amount_input: bool = False,
        exact_amount: bool = False,
        level_smooth: float = 0.0,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.head = head
        self.keep_focus = keep_focus
        self.multiple = multiple  # H and W must be multiples of this
        self.amount_input = amount_input  # the generator takes the amount channel
        self.exact_amount = exact_amount and amount_input and head is not None
        self.level_smooth = level_smooth if head is not None else 0.0  # px, sigma of `smooth_within_levels`
        self.train_side: int | None = None  # long side (px) of the frames it trained on, where known

    def generator_mask(self, mask: Tensor, amount: Tensor | float | None = None) -> Tensor:
        """What the generator gets beside the image: the mask (B,C,H,W), and for a model with the amount input the
        amount channel for `amount` (a number or (B,), head px; None or nan = unknown)."""
        if not self.amount_input:
            return mask
        code = amount_code(told_amounts(amount, mask.shape[0], mask))
        return torch.cat([mask, code.view(-1, 1, 1, 1).expand(-1, 1, *mask.shape[2:])], 1)

    def head_strength(
        self, raw: Tensor, mask: Tensor, strength: Tensor | float = 1.0, told: Tensor | float | None = None
    ) -> Tensor | float:
        """The multiplier of the head's radii for each sample: `strength`, but where `told` (head px; None or nan
        = unknown) gives an amount to a model with `exact_amount`, the strength that draws it exactly."""
        if not self.exact_amount or told is None:
            return strength
        amount = told_amounts(told, raw.shape[0], raw.float())
        if amount.isnan().all():
            return strength
        fitted = self.head.fit_strength(raw, mask, amount.nan_to_num(0.0))
        return torch.where(amount.isnan(), torch.as_tensor(strength, dtype=fitted.dtype), fitted)

    def radius(
        self,
        raw: Tensor,
        mask: Tensor,
        radius_scale: float = 1.0,
        strength: Tensor | float = 1.0,
        told: Tensor | float | None = None,
    ) -> Tensor:
        """The blur radius (B,1,H,W) px the head draws for a generator output: its expected radius at
        `head_strength`, times `radius_scale`."""
        return self.head.expected_radius(raw, radius_scale, self.head_strength(raw, mask, strength, told))

    def finish(
        self,
        image: Tensor,
        mask: Tensor,
        raw: Tensor,
        radius_scale: float = 1.0,
        strength: Tensor | float = 1.0,
        told: Tensor | float | None = None,
    ) -> Tensor:
        """A generator output -> the defocused image (B,3,H,W) in [-1,1]: the head (radii times `radius_scale` and
        `head_strength`; see BlurStack), then keep-focus. `raw` may come from a downscaled copy of `image` and be
        upsampled: the head and the keep-focus composite work at the photo's full resolution. An RGB output (no
        head) has no radii: it ignores `strength` (`inference.check_strength` refuses one other than 1)."""
        if self.head is None:
            out = raw
        else:
            out = self.head(image, raw, mask, radius_scale, self.head_strength(raw, mask, strength, told))
        return keep_focus(out, image, mask) if self.keep_focus else out

    def smooth_within_levels(self, raw: Tensor, mask: Tensor) -> Tensor:
        """A blur head's generator output (B,K,H,W) with its weights averaged under a Gaussian of `level_smooth` px
        within each blurred level of `mask` (B,1,H,W) (a normalised convolution: no level's choice leaks into
        another, the in-focus pixels keep theirs). The blur a pixel gets then varies smoothly over a level, as
        depth does on most surfaces, and does not step at every object's outline, where on real photos the
        generator's radius steps and the room's depth often does not (results-history.md, round 15)."""
        if not self.level_smooth:
            return raw
        weights, levels = self.head.weights(raw), blurred_levels(mask).to(raw.dtype)
        cover = gaussian_blur(levels, self.level_smooth).clamp_min(1e-6)  # (B,L,H,W)
        spread = gaussian_blur((weights[:, None] * levels[:, :, None]).flatten(1, 2), self.level_smooth)
        local = spread.unflatten(1, (levels.shape[1], -1)) / cover[:, :, None]  # (B,L,K,H,W)
        smoothed = (local * levels[:, :, None]).sum(1) + weights * (1 - levels.sum(1, keepdim=True))
        return self.head.logits(smoothed).to(raw.dtype)

    def _stages(self, image: Tensor, mask: Tensor, amount: Tensor | float | None) -> tuple[Tensor | None, Tensor]:
        """(two_stage's finished coarse image or None, the final generator output before `finish`). In eval mode
        (validation, predict, evaluate, export) the output is smoothed within the mask's levels
        (`smooth_within_levels`); training steps see it as it is: trained through the smoothing, the model scored
        lower on the real photos and trained twice as slowly on CPU (round 15)."""
        told = self.generator_mask(mask, amount)
        if hasattr(self.generator, "stages"):
            coarse, raw = self.generator.stages(image, told, lambda raw: self.finish(image, mask, raw, told=amount))
        else:
            coarse, raw = None, self.generator(image, told)
        return coarse, raw if self.training else self.smooth_within_levels(raw, mask)

    def output_raw(self, image: Tensor, mask: Tensor, amount: Tensor | float | None = None) -> Tensor:
        """The final generator output (B,C,H,W) in [-1,1], before `finish`; `amount` (a number or (B,), head px;
        None or nan = unknown) reaches only a model with the amount input (`generator_mask`)."""
        return self._stages(image, mask, amount)[1]

    def stages(self, image: Tensor, mask: Tensor, amount: Tensor | float | None = None) -> dict[str, Tensor]:
        """Every stage's image (B,3,H,W) in [-1,1], the final one under "output" (two_stage adds "coarse"); with a
        blur-stack head also the final stage's blur radius (B,1,H,W) px under "radius". `amount` as in
        `output_raw` (training: each target's own, or nan where the sample is told "unknown")."""
        coarse, raw = self._stages(image, mask, amount)
        outs = {"output": self.finish(image, mask, raw, told=amount)}
        if self.head is not None:
            outs["radius"] = self.radius(raw, mask, told=amount)
        return outs | ({"coarse": coarse} if coarse is not None else {})

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        """image (B,3,H,W) in [-1,1], mask (B,1,H,W) in [0,1] (0 = keep sharp) -> (B,3,H,W) in [-1,1], with the
        amount the model guesses (`inference.defocus` takes a told amount and a strength)."""
        return self.finish(image, mask, self.output_raw(image, mask))


def build_defocuser(cfg) -> Defocuser:
    """The Defocuser a config describes (cfg.arch, cfg.model.*, cfg.render.max_radius, cfg.keep_focus)."""
    m = cfg["model"]
    head = (
        BlurStack(stack_radii(float(cfg["render"]["max_radius"]), m["stack_levels"]), spread=m["head"] == "blur_spread")
        if m["head"] != "rgb"
        else None
    )
    generator = build_generator(
        cfg["arch"],
        mask_channels=1 + bool(m["amount_input"]),
        ngf=m["ngf"],
        num_downs=m["num_downs"],
        norm=m["norm"],
        dropout=m["dropout"],
        out_channels=head.channels if head else 3,
        global_context=m["global_context"],
    )
    return Defocuser(
        generator,
        head,
        bool(cfg["keep_focus"]),
        2 ** m["num_downs"],
        bool(m["amount_input"]),
        bool(m["exact_amount"]),
        float(m["level_smooth"]),
    )
