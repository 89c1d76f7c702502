"""Running a Defocuser on photos of any size: the one inference path of `predict`, `evaluate`, `export`'s users
and the demo.

Scale: blur radii are pixels at a long side of `max_side` (default 256, the scale of the renderer's k and of
`evaluate`'s targets); a larger photo gets them times long side / `max_side`, so the blur keeps its proportions.
The generator sees the photo at most at the scale of the frames it trained on (`Defocuser.train_side`, e.g. 192
px for the CPU preset; `max_side` where the checkpoint does not record it): objects and edges then cover as many
pixels as they did in training (on real photos this scored 0.1-0.25 dB better than deciding at 256 px; README,
"What moved the numbers"). Its per-pixel choice of blur is upsampled, and the blur itself (the blur-stack head)
and the keep-focus composite are computed on the full-resolution photo, so the subject keeps every pixel and the
bokeh is not upscaled. `max_side=0` runs the generator at full resolution with the radii as trained.

The amount of blur: `amount` A is the mean blur radius over the pixels out of focus, in percent of the photo's
long side (A = 3: 7.7 px at a 256-px long side, 30 px at 1000 px), the number a portrait mode's slider sets. Given,
a model with the amount input (model.amount_input) is told it and draws it; left out (None), the model guesses one
from the photo and the mask. `strength` s multiplies whichever amount is used: a given one before the model is told
it (A times s), a guessed one through the blur head's radii (clamped at its top radius, render.max_radius, as the
renderer clamps). s = 1 and no amount: the model's own guess, the trained look. A model with an RGB head paints its
pixels and has neither.

The input is padded to the network's multiple (`Defocuser.multiple`) with reflected pixels (edge pixels when the
photo is smaller than half a multiple) and a "blur" mask, and the output is cropped back.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from defocus_lit.errors import UserError
from defocus_lit.models.defocuser import Defocuser
from defocus_lit.ops.masks import in_focus
from defocus_lit.visualize import to_uint8

DEVICES = ("auto", "cpu", "cuda")
MAX_SIDE = 256  # px, the long side at which blur radii are defined; the generator's largest working side


def select_device(name: str) -> torch.device:
    """ "auto" = CUDA when available, else CPU; "cuda" (or "cuda:N") without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in DEVICES[1:]:
        raise UserError(f"--device: '{name}' is not one of {', '.join(DEVICES)} (or cuda:N)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available (use --device cpu or auto)")
    return torch.device(name)


def check_strength(model: Defocuser | None, strength: float) -> None:
    """UserError (naming --strength) unless `strength` is a finite number > 0 that `model` can apply: a strength
    other than 1 needs a blur head. `model` None (baselines alone) takes any valid strength."""
    if not 0 < strength < math.inf:
        raise UserError(f"--strength: must be a number > 0 (1 = the amount as given or guessed), got {strength:g}")
    if strength != 1 and model is not None and model.head is None:
        raise UserError(
            f"--strength {strength:g}: needs a checkpoint with a blur head (model.head=blur_spread or blur_stack); "
            "this one paints RGB (model.head=rgb)"
        )


def check_amount(model: Defocuser | None, amount: float | None) -> None:
    """UserError (naming --amount) unless `amount` is None (the model guesses) or a finite number > 0 that `model`
    takes: one trained with the amount input and a blur head. `model` None (baselines alone) takes any."""
    if amount is None:
        return
    if not 0 < amount < math.inf:
        raise UserError(f"--amount: must be a number > 0 (percent of the photo's long side), got {amount:g}")
    if model is not None and (not model.amount_input or model.head is None):
        raise UserError(
            f"--amount {amount:g}: this checkpoint was trained without the amount input (model.amount_input=false"
            f"{', model.head=rgb' if model.head is None else ''}); leave --amount out and scale its own amount with "
            "--strength"
        )


def told_radius(model: Defocuser, amount: float, strength: float, long_side: int, max_side: int) -> float:
    """The mean blur radius out of focus, in the head's px, that `model` is told for `amount` (percent of the
    photo's long side) times `strength` on a photo of this long side (`generator_output` scales the head's px by
    `radius_scale`). UserError (naming --amount) when that is more than the head's top radius can draw."""
    scale = radius_scale(long_side, max_side)
    radius = amount * strength / 100 * long_side / scale
    top = max(model.head.radii)
    if radius > top:
        largest = 100 * top * scale / long_side / strength
        raise UserError(
            f"--amount {amount:g}: more than this checkpoint's blur head can draw on a {long_side}-px photo"
            + (f" at --strength {strength:g}" if strength != 1 else "")
            + f" (at most {largest:.3g}: its largest radius, {top * scale:g} px)"
        )
    return radius


def amount_percent(radius: Tensor, mask: Tensor) -> Tensor:
    """(B,) the amount of blur of a blur radius map (B,1,H,W) px: its mean over the pixels `mask` (B,1,H,W) leaves
    out of focus, in percent of the long side (0 where every pixel is in focus)."""
    blurred = 1 - in_focus(mask)
    mean = (radius.float() * blurred).sum((1, 2, 3)) / blurred.sum((1, 2, 3)).clamp_min(1)
    return mean * 100 / max(radius.shape[-2:])


def check_max_side(max_side: int) -> None:
    """UserError (naming --max-side) unless `max_side` is >= 0 px (0 = generator at full resolution)."""
    if max_side < 0:
        raise UserError(f"--max-side: must be >= 0 px (0 = full resolution), got {max_side}")


def pad_to_multiple(image: Tensor, mask: Tensor, multiple: int) -> tuple[Tensor, Tensor, tuple[int, int]]:
    """Pad image (B,3,H,W) and mask (B,1,H,W) on all sides (centred) to multiples of `multiple`: the image by
    reflection (edge replication where the image is too small to reflect), the mask with 1 (blur).
    Returns (image, mask, (top, left)) so the caller can crop back."""
    h, w = image.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # left, right, top, bottom
    if ph == 0 and pw == 0:
        return image, mask, (0, 0)
    mode = "reflect" if max(pads[:2]) < w and max(pads[2:]) < h else "replicate"
    return F.pad(image, pads, mode=mode), F.pad(mask, pads, value=1.0), (pads[2], pads[0])


def radius_scale(long_side: int, max_side: int) -> float:
    """The factor by which `defocus` scales the blur radii of a photo of this long side (1 up to `max_side`)."""
    return max(1.0, long_side / max_side) if max_side else 1.0


@torch.inference_mode()
def defocus(
    model: Defocuser,
    image: Tensor,
    mask: Tensor,
    max_side: int = 0,
    strength: float = 1.0,
    amount: float | None = None,
) -> Tensor:
    """image (B,3,H,W) in [-1,1], mask (B,1,H,W) in [0,1] of any H, W, on the model's device
    -> (B,3,H,W) in [-1,1]. Above the generator's side (the smaller of `max_side` and the model's `train_side`;
    `max_side` 0 = never) the generator runs on a downscaled copy; its output is upsampled and the blur-stack head
    (radii times long side / `max_side` above `max_side`) and keep-focus run at full resolution. `amount` (percent
    of the long side; None = the model's guess) times `strength`: see the module's docstring (UserError where
    `check_strength`, `check_amount`, `told_radius` or `check_max_side` refuses it)."""
    raw, scale, head_strength, told = run_generator(model, image, mask, max_side, strength, amount)
    return model.finish(image, mask, raw, radius_scale=scale, strength=head_strength, told=told)


@torch.inference_mode()
def blur_radius(
    model: Defocuser,
    image: Tensor,
    mask: Tensor,
    max_side: int = 0,
    strength: float = 1.0,
    amount: float | None = None,
) -> Tensor | None:
    """The blur radius (B,1,H,W) in px that `defocus` gives each pixel before keep-focus (the blur-stack head's
    expected radius, at the photo's resolution), run as `defocus` runs the model; None for an RGB head."""
    if model.head is None:
        return None
    raw, scale, head_strength, told = run_generator(model, image, mask, max_side, strength, amount)
    return model.radius(raw, mask, radius_scale=scale, strength=head_strength, told=told)


@torch.inference_mode()
def guessed_amount(model: Defocuser, image: Tensor, mask: Tensor, max_side: int = 0) -> Tensor | None:
    """(B,) the amount (percent of the long side) the model guesses for these photos and masks, run as `defocus`
    runs it without an amount; None for an RGB head."""
    radius = blur_radius(model, image, mask, max_side)
    return None if radius is None else amount_percent(radius, mask)


def run_generator(
    model: Defocuser,
    image: Tensor,
    mask: Tensor,
    max_side: int = 0,
    strength: float = 1.0,
    amount: float | None = None,
) -> tuple[Tensor, float, float, float | None]:
    """(the generator output at the photo's H, W, the head's radius scale, the head's strength, the amount told in
    the head's px or None): `strength` and `amount` checked and applied as `defocus` applies them. For a caller that
    needs more than one reading of one run (`Defocuser.finish`, `Defocuser.radius`)."""
    check_strength(model, strength)
    check_amount(model, amount)
    told = None if amount is None else told_radius(model, amount, strength, max(image.shape[-2:]), max_side)
    raw, scale = generator_output(model, image, mask, max_side, told)
    return raw, scale, strength if told is None else 1.0, told


def generator_output(
    model: Defocuser, image: Tensor, mask: Tensor, max_side: int, told: Tensor | float | None = None
) -> tuple[Tensor, float]:
    """(the generator output at the photo's H, W, the head's radius scale): see `defocus`. `told`: the amount in
    the head's px (a number or (B,); None or nan = unknown: the model guesses)."""
    check_max_side(max_side)
    h, w = image.shape[-2:]
    scale = max(h, w) / min(max_side, model.train_side or max_side) if max_side else 1.0
    if scale <= 1:
        return _generator_output(model, image, mask, told), 1.0
    size = (max(1, round(h / scale)), max(1, round(w / scale)))
    raw = _generator_output(
        model, F.interpolate(image, size=size, mode="area"), F.interpolate(mask, size=size, mode="nearest"), told
    )
    # blur-stack logits: the [1,2,1] filter first removes the generator's 2-px checkerboard, which upsampling
    # would magnify into a visible grid; an RGB output is an image (bicubic)
    if model.head is not None:
        raw = F.interpolate(_smooth(raw), size=(h, w), mode="bilinear", align_corners=False)
    else:
        raw = F.interpolate(raw, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)
    return raw, radius_scale(max(h, w), max_side)


def _smooth(x: Tensor) -> Tensor:
    """(B,C,H,W) filtered by the separable [1,2,1]/4 kernel (edge pixels replicated): zero response at the
    Nyquist frequency."""
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device) / 4
    kernel = (kernel[:, None] * kernel[None, :]).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])


def _generator_output(model: Defocuser, image: Tensor, mask: Tensor, told: Tensor | float | None) -> Tensor:
    """The final generator output for any size: padded to the network's multiple, cropped back."""
    h, w = image.shape[-2:]
    padded_image, padded_mask, (top, left) = pad_to_multiple(image, mask, model.multiple)
    return model.output_raw(padded_image, padded_mask, told)[..., top : top + h, left : left + w]


def defocus_array(
    model: Defocuser,
    image: np.ndarray,
    mask: np.ndarray,
    device: torch.device,
    max_side: int = 0,
    strength: float = 1.0,
    amount: float | None = None,
) -> np.ndarray:
    """image (H,W,3) uint8 sRGB, mask (H,W) float32 in [0,1] -> defocused (H,W,3) uint8 (see `defocus`)."""
    x, m = array_tensors(image, mask, device)
    return to_uint8(defocus(model, x, m, max_side, strength, amount)[0])


def array_tensors(image: np.ndarray, mask: np.ndarray, device: torch.device) -> tuple[Tensor, Tensor]:
    """image (H,W,3) uint8 sRGB, mask (H,W) float32 in [0,1] -> image (1,3,H,W) in [-1,1], mask (1,1,H,W)."""
    x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float().div(127.5).sub(1)
    return x, torch.from_numpy(mask).to(device)[None, None]
