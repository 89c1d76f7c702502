"""The Python interface, for notebooks and scripts: what the commands do, as functions that take and give arrays.
The commands call these same functions.

    from defocus_lit import load_model
    model = load_model("outputs/patch_mask/RUN/checkpoints/best-epoch009-psnr35.82.ckpt")
    portrait = model.defocus("photo.jpg", "mask.png", amount=3)   # (H,W,3) uint8; numpy arrays and PIL images too
    radius = model.blur_radius(photo, mask)                       # (H,W) float32 px, the blur each pixel gets
    report = model.evaluate(manifest="photos/manifest.csv")       # the report of `defocus-lit evaluate`, a dict

Photos: a path, a PIL image or an array (H,W,3) uint8 (any mode `defocus-lit predict` reads); masks likewise, black
= keep sharp (a grey (H,W) array of 0..255, or floats in [0,1]). `amount`: the mean blur radius out of focus in
percent of the photo's long side (None: the model's guess); `strength` multiplies it (`models.inference`). Bad
input raises `defocus_lit.errors.UserError` with the message the commands print. `build_dataset` is
`defocus_lit.data.build.build_dataset` and `evaluate` `defocus_lit.evaluation.evaluate_checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from defocus_lit.data.build import build_dataset
from defocus_lit.errors import UserError
from defocus_lit.evaluation import evaluate_checkpoint
from defocus_lit.io import ImageSource, read_mask, read_rgb, source_name
from defocus_lit.models.checkpoint import load_checkpoint
from defocus_lit.models.defocuser import Defocuser
from defocus_lit.models.inference import (
    MAX_SIDE,
    array_tensors,
    blur_radius,
    check_amount,
    check_max_side,
    check_strength,
    defocus_array,
    guessed_amount,
    select_device,
)
from defocus_lit.select import Box, parse_box, read_strokes, select_subject

__all__ = ["Model", "build_dataset", "evaluate", "load_model", "subject_mask"]

evaluate = evaluate_checkpoint


@dataclass
class Model:
    """A trained checkpoint ready to defocus photos: its Defocuser (eval mode, on `device`), its run's config and
    the long side `max_side` at which its blur radii are as trained (`--max-side`)."""

    defocuser: Defocuser
    cfg: DictConfig
    device: torch.device
    path: Path
    max_side: int = MAX_SIDE

    @property
    def mask_kind(self) -> str:
        """binary, or patch (3-level masks 0 / 0.5 / 1)."""
        return str(self.cfg.data.mask_kind)

    def photo_and_mask(self, image: ImageSource, mask: ImageSource) -> tuple[np.ndarray, np.ndarray]:
        """The photo (H,W,3) uint8 and its mask (H,W) float32 in [0,1] (0 = keep sharp), read as predict reads
        them; UserError when the mask is not the photo's size."""
        photo, grey = read_rgb(image), read_mask(mask, self.mask_kind)
        if grey.shape != photo.shape[:2]:
            (mh, mw), (ih, iw) = grey.shape, photo.shape[:2]
            raise UserError(f"{source_name(mask)}: mask is {mw}x{mh} but the image {source_name(image)} is {iw}x{ih}")
        return photo, grey

    def check(self, amount: float | None = None, strength: float = 1.0) -> None:
        """UserError (naming --amount or --strength) unless this model can apply them."""
        check_strength(self.defocuser, strength)
        check_amount(self.defocuser, amount)

    def defocus(
        self, image: ImageSource, mask: ImageSource, amount: float | None = None, strength: float = 1.0
    ) -> np.ndarray:
        """The photo defocused (H,W,3) uint8, at its full size: the model told `amount` (or guessing) times
        `strength`."""
        photo, grey = self.photo_and_mask(image, mask)
        return defocus_array(self.defocuser, photo, grey, self.device, self.max_side, strength, amount)

    def blur_radius(
        self, image: ImageSource, mask: ImageSource, amount: float | None = None, strength: float = 1.0
    ) -> np.ndarray:
        """(H,W) float32: the blur radius in px `defocus` gives each pixel before the sharp area is pasted back
        (the blur head's expected radius); UserError for a checkpoint whose head paints RGB."""
        if self.defocuser.head is None:
            raise UserError(f"{self.path}: its head paints RGB (model.head=rgb); it has no blur radius")
        x, m = array_tensors(*self.photo_and_mask(image, mask), self.device)
        return blur_radius(self.defocuser, x, m, self.max_side, strength, amount)[0, 0].float().cpu().numpy()

    def guess_amount(self, image: ImageSource, mask: ImageSource) -> float:
        """The amount of blur (percent of the long side) the model guesses for this photo and mask."""
        x, m = array_tensors(*self.photo_and_mask(image, mask), self.device)
        amount = guessed_amount(self.defocuser, x, m, self.max_side)
        if amount is None:
            raise UserError(f"{self.path}: its head paints RGB (model.head=rgb); it has no amount of blur")
        return float(amount[0])

    def evaluate(self, **options) -> dict:
        """`evaluate_checkpoint` of this model's checkpoint on its device and `max_side` (options: data= or
        manifest=, out=, amount=, strength=, limit=, ...)."""
        return evaluate_checkpoint(self.path, device=str(self.device), max_side=self.max_side, **options)


def subject_mask(image: ImageSource, box: str | Box | None = None, strokes: ImageSource | None = None) -> np.ndarray:
    """The mask file `predict` reads for the photo's subject, selected from a box around it (`x0,y0,x1,y1` in
    photo pixels, or a `Box`) and/or strokes (black = surely subject, white = surely background): (H,W) uint8, 0 =
    the subject (kept sharp), 255 = the rest (`defocus_lit.select`). UserError for a bad box or strokes file, or
    when nothing is selected."""
    if box is None and strokes is None:
        raise UserError("give --box X0,Y0,X1,Y1, --strokes S.png or both")
    photo = read_rgb(image)
    height, width = photo.shape[:2]
    box = parse_box(box, width, height) if isinstance(box, str) else box
    subject = select_subject(photo, box, None if strokes is None else read_strokes(strokes, (height, width)))
    if not subject.any():
        raise UserError(
            f"{source_name(image)}: nothing was selected; draw the box closer around the subject or add strokes"
        )
    return np.where(subject, 0, 255).astype(np.uint8)


def load_model(ckpt: str | Path, device: str = "auto", max_side: int = MAX_SIDE) -> Model:
    """The model of a `defocus-lit train` checkpoint on `device` ("auto": CUDA when present). UserError for a file
    that is not one."""
    check_max_side(max_side)
    torch_device = select_device(device)
    defocuser, cfg = load_checkpoint(ckpt)
    return Model(defocuser.to(torch_device), cfg, torch_device, Path(ckpt), max_side)
