"""Reading and writing photos, depth maps and masks with clear errors. Arrays are numpy, (H,W,3) uint8 sRGB
for colour and (H,W) for single-channel maps."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from defocus_lit.errors import UserError


def _open(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable image ({err})") from None
    return img


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """(H,W,3) uint8 sRGB, EXIF orientation applied."""
    img = ImageOps.exif_transpose(_open(path))
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """(H,W) array of the file's own values: uint16 for 16-bit PNGs, uint8 otherwise.
    A colour file (e.g. a disparity JPEG saved with three equal channels) gives its first channel."""
    img = ImageOps.exif_transpose(_open(path))  # a rotated phone mask lines up with its photo
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype == np.int32:  # PIL opens 16-bit PNGs as mode "I"
        arr = arr.astype(np.uint16) if arr.max(initial=0) < 65536 else arr
    return arr.copy()


def write_rgb(path: str | os.PathLike, image: np.ndarray, icc_profile: bytes | None = None) -> None:
    """Write (H,W,3) uint8 as PNG or JPEG by extension, atomically (temporary file, then rename)."""
    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: output must end in .png, .jpg or .jpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    extra = {"quality": 95} if fmt == "JPEG" else {}
    if icc_profile:
        extra["icc_profile"] = icc_profile
    try:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=fmt, **extra)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
