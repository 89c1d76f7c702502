"""`defocus-lit predict`: defocus your own photo, or a folder of photos, with a trained checkpoint.

The mask is a grey image (any mode: 1-bit, palette, 16-bit ...) of the photo's size: black (< 128) marks what
stays sharp, white what is blurred; `--box X0,Y0,X1,Y1` instead selects the subject inside the box (`defocus-lit
mask`, `defocus_lit.select`) and keeps it sharp. A checkpoint trained on patch masks (`data.mask_kind=patch`) also
takes the 3-level mask 0 / 128 / 255 (sharp / partial blur / full blur); a binary mask works for it too.

The generator runs at a working size of `--max-side` px (long side, default 256) and the blur at full resolution:
see `defocus_lit.models.inference`. `--amount A` sets how much blur (the mean blur radius out of focus, in percent
of the photo's long side; default: the model's guess) and `--strength S` multiplies it, given or guessed. A folder
is processed file by file: every good pair is written (atomically), each bad one is named in one line, and the
command exits with status 2 at the end if any failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from defocus_lit.api import Model, load_model, subject_mask
from defocus_lit.commands import add_amount_options, add_inference_options
from defocus_lit.errors import DiskFull, UserError
from defocus_lit.io import ensure_folder, icc_profile, write_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint from `defocus-lit train` (.ckpt)")
    parser.add_argument("--image", required=True, help="photo (PNG/JPEG/...) or a folder of photos")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--mask",
        help="grey mask of the photo's size, black = keep sharp (or a folder: paired by file stem)",
    )
    what.add_argument(
        "--box",
        metavar="X0,Y0,X1,Y1",
        help="instead of --mask: a box around the subject (photo pixels), which is selected and kept sharp (see "
        "`defocus-lit mask`)",
    )
    parser.add_argument("--out", required=True, help="output .png/.jpg (or a folder, for folder input)")
    add_inference_options(parser)
    add_amount_options(parser)


def run(args: argparse.Namespace) -> int:
    image, out = Path(args.image), Path(args.out)
    if not image.exists():
        raise UserError(f"{image}: no such file or folder")
    folder = image.is_dir()
    if args.box is not None and folder:
        raise UserError(f"--box: selects the subject of one photo; {image} is a folder (give masks with --mask)")
    if args.mask is not None and folder != Path(args.mask).is_dir():
        raise UserError(f"{args.mask if folder else image}: --image and --mask must both be files or both be folders")
    if not folder and out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserError(f"{out}: output must end in {', '.join(OUTPUT_SUFFIXES)}")
    if folder and out.exists() and not out.is_dir():
        raise UserError(f"{out}: for folder input --out must be a folder")
    mask = Path(args.mask) if args.mask is not None else subject_mask(image, args.box)
    jobs = pair_folders(image, mask) if folder else [(image, mask, out.name)]
    model = load_model(args.ckpt, args.device, args.max_side)
    model.check(args.amount, args.strength)
    if folder:
        ensure_folder(out)  # an --out that cannot be made is one error, not one per image
    start = time.perf_counter()
    if not folder:
        predict_file(model, image, mask, out, args.amount, args.strength)
        print(f"wrote {out} ({model.device.type}, {time.perf_counter() - start:.1f} s)")
        return 0
    failed = predict_folder(model, jobs, out, args.amount, args.strength)
    print(
        f"wrote {len(jobs) - failed} of {len(jobs)} images to {out} ({model.device.type}, "
        f"{time.perf_counter() - start:.1f} s)"
    )
    if failed:
        raise UserError(f"{image}: {failed} of {len(jobs)} images could not be defocused (named above)")
    return 0


# ----- inputs -------------------------------------------------------------------------------------------------
def _images(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in files:
                raise UserError(
                    f"{path}: two files with the stem '{path.stem}' ({files[path.stem].name}); pairing is by stem"
                )
            files[path.stem] = path
    return files


def pair_folders(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path, str]]:
    """(image, mask, output name) for every stem present in both folders; UserError listing unpaired files."""
    images, masks = _images(image_dir), _images(mask_dir)
    unpaired = [f"{images[s]} (no mask in {mask_dir})" for s in images if s not in masks]
    unpaired += [f"{masks[s]} (no image in {image_dir})" for s in masks if s not in images]
    if unpaired:
        raise UserError(f"{image_dir}: unpaired files: {'; '.join(unpaired)}")
    if not images:
        raise UserError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return [(images[s], masks[s], _output_name(images[s])) for s in images]


def _output_name(image: Path) -> str:
    """The input's name when its format can be written (PNG/JPEG), else the stem as PNG."""
    return image.name if image.suffix.lower() in OUTPUT_SUFFIXES else f"{image.stem}.png"


def predict_file(
    model: Model,
    image_path: Path,
    mask_path: Path | np.ndarray,
    out: Path,
    amount: float | None = None,
    strength: float = 1.0,
) -> None:
    """Defocus one photo and write it (atomically) with the input's size and ICC profile."""
    write_rgb(out, model.defocus(image_path, mask_path, amount, strength), icc_profile=icc_profile(image_path))


def predict_folder(
    model: Model,
    jobs: list[tuple[Path, Path, str]],
    out_dir: Path,
    amount: float | None = None,
    strength: float = 1.0,
) -> int:
    """Defocus every pair into `out_dir`, each file written atomically; a pair that cannot be read is named in one
    `error:` line and skipped, a full disk stops. Returns the number of failed pairs."""
    failed = 0
    for image_path, mask_path, name in tqdm(jobs, desc="predict", unit="image"):
        try:
            predict_file(model, image_path, mask_path, out_dir / name, amount, strength)
        except DiskFull:  # every later image would fail the same way: stop, keeping those written
            raise
        except UserError as err:
            tqdm.write(f"error: {err}", file=sys.stderr)
            failed += 1
    return failed
