"""The README's picture (docs/images/portrait.png): photo | mask | output at the model's guess | output told more.

    .venv/bin/python docs/make_readme_figure.py [--ckpt C] [--seed S] [--out F]

Takes a synthetic scene of the project's own generator (no real photo: nothing of ../shared/data goes into the
repository), finds its foreground subject from the scene's depth as docs/make_demo_screenshots.py does, makes its
mask (binary: the subject black, the rest white; for a patch-mask checkpoint the rest is grey, partly blurred, where
the paper's foreground plane is in focus or partly blurred, else white) and runs the checkpoint through the Python
API twice: guessing the amount of blur, and told a larger amount. Same checkpoint and seed, same picture.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from defocus_lit import load_model
from defocus_lit.data.planes import depth_grey, focal_plane, foreground_subject, nearness, patch_mask, valid_depth
from defocus_lit.data.synthetic import synthetic_scene

ROOT = Path(__file__).resolve().parents[1]
CKPT = Path("/work/main/outputs/patch_mask/amt_c/checkpoints/best-epoch009-psnr35.81.ckpt")
CAPTION = 22  # px above each panel


def scene_and_mask(seed: int, size: tuple[int, int], mask_kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic photo (H,W,3) uint8 and the mask of its foreground subject (H,W) uint8, 0 = keep sharp."""
    rgb, depth = synthetic_scene(seed, size)
    subject = foreground_subject(nearness(depth, "depth"), valid_depth(depth))
    if mask_kind == "patch":  # the subject sharp; the rest partly (128) or fully (255) blurred as the fore plane says
        levels = patch_mask(focal_plane(depth_grey(depth, "depth"), "fore"))
        return rgb, np.where(subject, 0, np.maximum(levels, 128)).astype(np.uint8)
    return rgb, np.where(subject, 0, 255).astype(np.uint8)


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def captioned_row(panels: list[tuple[str, np.ndarray]], width: int) -> Image.Image:
    """The panels side by side, each scaled to `width` px and captioned above."""
    tiles = []
    for _, array in panels:
        tile = Image.fromarray(array).convert("RGB")
        tiles.append(tile.resize((width, round(tile.height * width / tile.width)), Image.Resampling.LANCZOS))
    gap, height = 6, tiles[0].height
    canvas = Image.new("RGB", (len(tiles) * (width + gap) - gap, height + CAPTION), "white")
    draw, text_font = ImageDraw.Draw(canvas), font(15)
    for i, ((caption, _), tile) in enumerate(zip(panels, tiles)):
        canvas.paste(tile, (i * (width + gap), CAPTION))
        draw.text((i * (width + gap) + 2, 2), caption, fill="black", font=text_font)
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, default=CKPT, help=f"a checkpoint with the amount input (default {CKPT})")
    parser.add_argument("--seed", type=int, default=2, help="the synthetic scene (2: a person outdoors)")
    parser.add_argument("--more", type=float, default=2.0, help="the larger amount: the guess times this")
    parser.add_argument("--width", type=int, default=300, help="px per panel in the figure")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "portrait.png")
    args = parser.parse_args()

    model = load_model(args.ckpt, device="cpu")
    photo, mask = scene_and_mask(args.seed, (400, 600), model.mask_kind)
    guess = model.guess_amount(photo, mask)
    more = min(args.more * guess, 6.0)  # 6.25 % is the most the blur head draws at the default --max-side
    panels = [
        ("photo (synthetic scene)", photo),
        (f"{model.mask_kind} mask (black = sharp)", mask),
        (f"output: its own amount, {guess:.1f} %", model.defocus(photo, mask)),
        (f"output: told --amount {more:.1f}", model.defocus(photo, mask, amount=round(more, 1))),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    captioned_row(panels, args.width).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB): guess {guess:.2f} %, told {more:.1f} %")


if __name__ == "__main__":
    main()
