"""Subject selection: a box dragged around the subject and/or strokes (surely subject, surely background) in, the
subject's outline out, as (H,W) bool, True = subject (what a mask file keeps sharp).

The method, and why (docs/subject-selection.md has the measurements):

- OpenCV's GrabCut (colour GMMs and a graph cut, no model to download) segments a *working copy*: the box plus
  `CONTEXT` of its size of surroundings, scaled so its long side is `WORK_SIDE` px. Cropping first keeps a small
  subject (a car far away) large enough to segment, and the time per snap the same for a 12 MP photo as for a
  thumbnail. It runs in CIE Lab, where colour distances follow what the eye sees: on the tuning photos this kept
  sky and shadow out of subjects that RGB let in. The random start of its GMMs is seeded: the same input gives
  the same mask.
- Strokes are hard constraints (GC_FGD/GC_BGD) in the graph cut and again on the final mask: a stroke pixel is
  always in (subject) or out (background).
- Specks apart from the subject (a component under `KEEP_FRACTION` of the largest) are dropped unless a subject
  stroke touches them.
- The edge is refined at full resolution with a colour guided filter (He et al.) of the working mask, guided by
  the photo: its local linear colour model moves the outline onto the photo's edges (hair, fur). The filter's
  coefficients are computed at up to `REFINE_SIDE` px and applied to the full-resolution pixels near the outline
  (He & Sun's fast guided filter), so a 12 MP photo costs little more than a small one.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image, ImageOps

from defocus_lit.errors import UserError
from defocus_lit.io import read_mask_grey

WORK_SIDE = 512  # long side (px) of the working copy GrabCut segments
MAX_UPSCALE = 4.0  # a tiny box is enlarged at most this much for the working copy
CONTEXT = 0.1  # surroundings kept around the box, as a fraction of its width/height
ITERATIONS = 5  # GrabCut iterations (GMM re-estimation + graph cut)
KEEP_FRACTION = 0.1  # subject components smaller than this fraction of the largest are dropped
REFINE_SIDE = 1024  # long side (px) at which the guided filter's coefficients are computed
GUIDE_RADIUS = 2.0  # guided filter window radius, in working-copy pixels (the working mask's uncertainty)
GUIDE_EPS = 1e-3  # guided filter regularisation (colour variance, photo scaled to 0..1)

SUBJECT, UNKNOWN, BACKGROUND = 1, 0, -1  # stroke labels, see `read_strokes`


class Box(NamedTuple):
    """A box in photo pixels: columns x0..x1-1, rows y0..y1-1 (x1, y1 exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int


def parse_box(text: str, width: int, height: int) -> Box:
    """`x0,y0,x1,y1` (pixels of the photo as shown, corners in any order, numbers may be fractional) as a Box
    clipped to the photo. UserError naming --box when it is not four numbers, has no area, or lies outside."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(np.isfinite(values)):
        raise UserError(f"--box: expected four numbers x0,y0,x1,y1 (pixels), got {text!r}")
    x0, x1 = sorted(values[0::2])
    y0, y1 = sorted(values[1::2])
    if round(x1) - round(x0) < 1 or round(y1) - round(y0) < 1:
        raise UserError(f"--box: {text!r} is empty (no width or no height)")
    box = Box(max(0, round(x0)), max(0, round(y0)), min(width, round(x1)), min(height, round(y1)))
    if box.x1 - box.x0 < 1 or box.y1 - box.y0 < 1:
        raise UserError(f"--box: {text!r} lies outside the photo ({width}x{height} pixels)")
    return box


def read_strokes(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """(H,W) int8 strokes from an image of the photo's size (any mode): dark (grey < 64, as a mask's black =
    sharp) = SUBJECT, light (> 191, white = blur) = BACKGROUND, mid grey or transparent (alpha < 128) = UNKNOWN.
    UserError naming the file when it cannot be read, has another size, or marks nothing."""
    grey = read_mask_grey(path)  # any mode, 16-bit scaled, EXIF orientation applied; UserError if unreadable
    if grey.shape != tuple(shape):
        raise UserError(f"{path}: strokes are {grey.shape[1]}x{grey.shape[0]} but the photo is {shape[1]}x{shape[0]}")
    strokes = np.select([grey < 64, grey > 191], [SUBJECT, BACKGROUND], UNKNOWN).astype(np.int8)
    with Image.open(path) as img:
        if "A" in img.getbands() or "transparency" in img.info:
            alpha = np.asarray(ImageOps.exif_transpose(img).convert("RGBA"))[..., 3]
            strokes[alpha < 128] = UNKNOWN
    if not strokes.any():
        raise UserError(
            f"{path}: no stroke (black = surely subject, white = surely background, mid grey or transparent = unknown)"
        )
    return strokes


def select_subject(image: np.ndarray, box: Box | None = None, strokes: np.ndarray | None = None) -> np.ndarray:
    """(H,W) bool, True = subject, for an (H,W,3) uint8 RGB photo, from a box around the subject and/or (H,W)
    int8 strokes (`read_strokes`). Without a box every pixel may be subject and at least one SUBJECT stroke is
    needed. UserError when the input leaves nothing to learn the subject or the background from."""
    height, width = image.shape[:2]
    strokes = np.zeros((0, 0), np.int8) if strokes is None or not strokes.any() else strokes
    if box is None and not (strokes == SUBJECT).any():
        raise UserError("strokes without a box need at least one subject (black) stroke")
    x0, y0, x1, y1 = _window(box, strokes, width, height)
    crop = image[y0:y1, x0:x1]
    reduced = _resize(crop, min(1.0, REFINE_SIDE / max(crop.shape[:2])))  # the refinement's guide
    scale = min(MAX_UPSCALE, WORK_SIDE / max(crop.shape[:2]))  # working-copy px per photo px
    small = _resize(reduced, scale * crop.shape[1] / reduced.shape[1])
    inside = (
        (0, 0, crop.shape[1], crop.shape[0]) if box is None else (box.x0 - x0, box.y0 - y0, box.x1 - x0, box.y1 - y0)
    )
    crop_strokes = strokes[y0:y1, x0:x1] if strokes.size else strokes

    labels = _seeds(small.shape[:2], crop.shape[:2], None if box is None else inside, crop_strokes)
    cv2.setRNGSeed(0)  # GrabCut starts its GMMs with k-means++: seeded, the same input gives the same mask
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)
    cv2.grabCut(lab, labels, None, np.zeros((1, 65)), np.zeros((1, 65)), ITERATIONS, cv2.GC_INIT_WITH_MASK)
    subject = _drop_specks(np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)), labels == cv2.GC_FGD)

    sharp = np.zeros(crop.shape[:2], bool)
    ix0, iy0, ix1, iy1 = inside
    sharp[iy0:iy1, ix0:ix1] = _refine(crop, reduced, subject.astype(np.float32), scale)[iy0:iy1, ix0:ix1]
    if strokes.size:
        sharp[crop_strokes == SUBJECT] = True
        sharp[crop_strokes == BACKGROUND] = False
    out = np.zeros((height, width), bool)
    out[y0:y1, x0:x1] = sharp
    return out


def _seeds(
    size: tuple[int, int], crop_size: tuple[int, int], inside: tuple[int, int, int, int] | None, strokes: np.ndarray
) -> np.ndarray:
    """GrabCut's (h,w) uint8 start labels for a working copy of `size` (h,w) of a crop of `crop_size`: outside
    the box (x0,y0,x1,y1 in crop px) surely background, inside probably subject; without a box, all probably
    background; (crop-sized int8) strokes as sure labels, a subject stroke winning where both shrink to a pixel."""
    fy, fx = size[0] / crop_size[0], size[1] / crop_size[1]
    if inside is None:
        labels = np.full(size, cv2.GC_PR_BGD, np.uint8)
    else:
        labels = np.full(size, cv2.GC_BGD, np.uint8)
        x0, y0, x1, y1 = round(inside[0] * fx), round(inside[1] * fy), round(inside[2] * fx), round(inside[3] * fy)
        labels[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = cv2.GC_PR_FGD
    if strokes.size:
        shrink = lambda flags: cv2.resize(flags.astype(np.float32), size[::-1], interpolation=cv2.INTER_AREA) > 0
        labels[shrink(strokes == BACKGROUND)] = cv2.GC_BGD
        labels[shrink(strokes == SUBJECT)] = cv2.GC_FGD
    if not np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():
        raise UserError("the box covers the whole photo and no stroke marks background: draw the box tighter")
    if not np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).any():
        raise UserError("nothing is left that could be the subject: the strokes mark the whole box as background")
    return labels


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
    """(h,w,3) uint8 scaled by `factor` (area-averaged down, bicubic up); itself for 1."""
    if factor == 1:
        return image
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)


def _window(box: Box | None, strokes: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """The part of the photo segmented: the box and every subject stroke, with `CONTEXT` of surroundings (the
    background just outside the box is the best sample of the background inside it); the whole photo when
    there is no box."""
    if box is None:
        return 0, 0, width, height
    x0, y0, x1, y1 = box
    rows, cols = np.nonzero(strokes == SUBJECT) if strokes.size else ((), ())
    if len(rows):
        x0, y0, x1, y1 = min(x0, cols.min()), min(y0, rows.min()), max(x1, cols.max() + 1), max(y1, rows.max() + 1)
    dx, dy = CONTEXT * (x1 - x0), CONTEXT * (y1 - y0)
    return (
        max(0, int(x0 - dx)),
        max(0, int(y0 - dy)),
        min(width, int(np.ceil(x1 + dx))),
        min(height, int(np.ceil(y1 + dy))),
    )


def _drop_specks(subject: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(h,w) bool without the components under KEEP_FRACTION of the largest, except those an anchor touches."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(subject.astype(np.uint8), connectivity=8)
    if count <= 2:
        return subject
    areas = stats[:, cv2.CC_STAT_AREA]
    keep = areas >= KEEP_FRACTION * areas[1:].max()
    keep[np.unique(labels[anchors])] = True
    keep[0] = False
    return keep[labels]


def _refine(crop: np.ndarray, reduced: np.ndarray, coarse: np.ndarray, scale: float) -> np.ndarray:
    """(h,w) bool: the (h',w') float32 working mask `coarse` guided-filtered with the (h,w,3) uint8 photo `crop`
    and thresholded at 0.5. The filter's coefficients are found on `reduced`, the crop at up to REFINE_SIDE px; at
    full resolution they are applied (bilinearly upsampled) only near the outline found at that size, the rest
    taking its decision."""
    height, width = crop.shape[:2]
    size = reduced.shape[1], reduced.shape[0]
    factor = size[0] / width
    guide = reduced.astype(np.float32) / 255
    radius = max(1, round(GUIDE_RADIUS * factor / scale))
    a, b = _guided_coefficients(guide, cv2.resize(coarse, size, interpolation=cv2.INTER_LINEAR), radius, GUIDE_EPS)
    sharp = np.einsum("hwc,hwc->hw", a, guide) + b > 0.5
    if reduced is crop:
        return sharp
    kernel = np.ones((3, 3), np.uint8)
    near = cv2.dilate(sharp.astype(np.uint8), kernel) != cv2.erode(sharp.astype(np.uint8), kernel)
    sharp = cv2.resize(sharp.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    rows, cols = np.nonzero(cv2.resize(near.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST))
    coefficients = _bilinear(
        np.dstack([a, b]), (rows + 0.5) * size[1] / height - 0.5, (cols + 0.5) * size[0] / width - 0.5
    )
    colour = crop[rows, cols].astype(np.float32) / 255
    sharp[rows, cols] = np.einsum("nc,nc->n", coefficients[:, :3], colour) + coefficients[:, 3] > 0.5
    return sharp


def _bilinear(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n,c) values of the (h,w,c) `grid` at fractional pixel positions (n,) `rows`, `cols` (clamped to the grid)."""
    grid = np.pad(grid, ((0, 1), (0, 1), (0, 0)), mode="edge")  # the last row and column interpolate with themselves
    rows = np.clip(rows, 0, grid.shape[0] - 2)
    cols = np.clip(cols, 0, grid.shape[1] - 2)
    r0, c0 = rows.astype(np.int64), cols.astype(np.int64)
    fr, fc = (rows - r0)[:, None].astype(np.float32), (cols - c0)[:, None].astype(np.float32)
    top = grid[r0, c0] * (1 - fc) + grid[r0, c0 + 1] * fc
    bottom = grid[r0 + 1, c0] * (1 - fc) + grid[r0 + 1, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def _guided_coefficients(guide: np.ndarray, target: np.ndarray, radius: int, eps: float) -> tuple[np.ndarray, ...]:
    """The colour guided filter's window-averaged (h,w,3) a and (h,w) b, output = a . guide + b, for an (h,w,3)
    float32 guide and an (h,w) float32 target: per window, the least-squares affine map from colour to target."""
    mean = lambda x: cv2.blur(x, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)
    mean_i, mean_p = mean(guide), mean(target)
    cov_ip = mean(guide * target[..., None]) - mean_i * mean_p[..., None]
    var = {
        (i, j): mean(guide[..., i] * guide[..., j]) - mean_i[..., i] * mean_i[..., j]
        for i in range(3)
        for j in range(i, 3)
    }
    for i in range(3):
        var[i, i] += eps
    # the symmetric 3x3 covariance inverted by its cofactors, all pixels at once
    cofactor = {
        (0, 0): var[1, 1] * var[2, 2] - var[1, 2] ** 2,
        (0, 1): var[0, 2] * var[1, 2] - var[0, 1] * var[2, 2],
        (0, 2): var[0, 1] * var[1, 2] - var[0, 2] * var[1, 1],
        (1, 1): var[0, 0] * var[2, 2] - var[0, 2] ** 2,
        (1, 2): var[0, 1] * var[0, 2] - var[0, 0] * var[1, 2],
        (2, 2): var[0, 0] * var[1, 1] - var[0, 1] ** 2,
    }
    det = var[0, 0] * cofactor[0, 0] + var[0, 1] * cofactor[0, 1] + var[0, 2] * cofactor[0, 2]
    inverse = lambda i, j: cofactor[min(i, j), max(i, j)]
    a = np.stack([sum(inverse(i, j) * cov_ip[..., j] for j in range(3)) / det for i in range(3)], axis=-1)
    b = mean_p - np.einsum("hwc,hwc->hw", a, mean_i)
    return mean(a), mean(b)
