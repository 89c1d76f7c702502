"""Picture helpers: side-by-side panels with captions, for validation grids and evaluation reports."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

CAPTION_HEIGHT = 14


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C,H,W) in [-1,1] (C = 1 or 3) -> (H,W,3) uint8."""
    image = image.detach().float().cpu().clamp(-1, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return ((image + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def panel_row(panels: dict[str, torch.Tensor]) -> np.ndarray:
    """Panels (C,H,W) in [-1,1] of one size side by side, each captioned with its name: (H+14, W*n, 3) uint8."""
    tiles = [to_uint8(p) for p in panels.values()]
    height, width = tiles[0].shape[:2]
    canvas = Image.new("RGB", (width * len(tiles), height + CAPTION_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, tile) in enumerate(zip(panels, tiles)):
        canvas.paste(Image.fromarray(tile), (i * width, CAPTION_HEIGHT))
        draw.text((i * width + 3, 1), name, fill="black")
    return np.asarray(canvas)


def panel_grid(rows: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """Several `panel_row`s stacked vertically (all rows the same size)."""
    return np.concatenate([panel_row(r) for r in rows], axis=0)
