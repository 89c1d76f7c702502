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


def scatter_plot(
    points: dict[str, list[tuple[float, float]]], x_label: str, y_label: str, title: str, size: int = 360
) -> np.ndarray:
    """A square scatter plot (size+72, size+72, 3) uint8 of (x, y) points in groups (one colour each, named in a
    legend), both axes from 0 to just past the largest value with ticks, and the diagonal y = x in grey."""
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    top = max([max(x, y) for group in points.values() for x, y in group] + [1e-6]) * 1.05
    step = next(s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, float("inf")) if top / s <= 8)
    left, head = 56, 24  # room for the y ticks and label, the title
    canvas = Image.new("RGB", (size + left + 16, size + head + 48), "white")
    draw = ImageDraw.Draw(canvas)

    def at(x: float, y: float) -> tuple[float, float]:
        return left + x / top * size, head + size - y / top * size

    draw.rectangle([at(0, top), at(top, 0)], outline="black")
    draw.line([at(0, 0), at(top, top)], fill="#bbbbbb")
    for k in range(int(top / step) + 1):
        (x, y0), (x0, y) = at(k * step, 0), at(0, k * step)
        draw.line([(x, y0), (x, y0 + 4)], fill="black")
        draw.line([(x0 - 4, y), (x0, y)], fill="black")
        draw.text((x - 6, y0 + 6), f"{k * step:g}", fill="black")
        draw.text((x0 - 24, y - 6), f"{k * step:g}", fill="black")
    for i, (name, group) in enumerate(points.items()):
        colour = colours[i % len(colours)]
        for x, y in group:
            cx, cy = at(x, y)
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], outline=colour, width=2)
        draw.text((left + 6, head + 4 + 12 * i), name, fill=colour)
    draw.text((left, 4), title, fill="black")
    draw.text((left + size // 2 - 3 * len(x_label), head + size + 24), x_label, fill="black")
    label = Image.new("RGB", (size, CAPTION_HEIGHT), "white")
    ImageDraw.Draw(label).text((size // 2 - 3 * len(y_label), 1), y_label, fill="black")
    canvas.paste(label.rotate(90, expand=True), (2, head))
    return np.asarray(canvas)
