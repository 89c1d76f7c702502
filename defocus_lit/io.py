"""Files in and out: photos, depth maps and masks read with clear errors (numpy, (H,W,3) uint8 sRGB for colour
and (H,W) for single-channel maps), and the one atomic write every output of the package goes through."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike, *, folder: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` (`.NAME.PID.tmp`, an empty folder when `folder`) to write to; renamed over
    `path` when the block completes. On any error or interrupt it is removed and `path` is left as it was, so a
    reader never sees a half-written file. An existing folder at `path` is replaced as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove(tmp)
    if folder:
        tmp.mkdir()
    try:
        yield tmp
        if folder and path.is_dir():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        _remove(tmp)


def write_rgb(path: str | os.PathLike, image: np.ndarray, icc_profile: bytes | None = None) -> None:
    """Write (H,W,3) uint8 as PNG or JPEG by extension, atomically."""
    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: output must end in .png, .jpg or .jpeg")
    extra = {"quality": 95} if fmt == "JPEG" else {}
    if icc_profile:
        extra["icc_profile"] = icc_profile
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=fmt, **extra)


def read_mask(path: str | os.PathLike, mask_kind: str = "binary") -> np.ndarray:
    """(H,W) float32 in [0,1], 0 = keep sharp: a grey mask thresholded at 128 to 0/1, or for a patch checkpoint
    snapped to the nearest of 0/128/255 -> 0/0.5/1. UserError if no pixel stays sharp."""
    grey = read_gray(path).astype(np.float32)
    if grey.max(initial=0) > 255:  # a 16-bit file
        grey /= 257.0
    if mask_kind == "patch":
        mask, sharp = np.select([grey < 64, grey < 192], [0.0, 0.5], 1.0).astype(np.float32), "< 64"
    else:
        mask, sharp = (grey >= 128).astype(np.float32), "< 128"
    if not (mask == 0).any():
        raise UserError(f"{path}: the mask has no in-focus pixel (black, value {sharp}, marks what stays sharp)")
    return mask


def icc_profile(path: str | os.PathLike) -> bytes | None:
    """The file's embedded ICC colour profile, if any (kept in the output so colours look the same)."""
    with Image.open(path) as img:
        return img.info.get("icc_profile")
