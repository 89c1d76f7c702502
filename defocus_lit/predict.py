"""`defocus-lit predict`: defocus your own photo, or a folder of photos, with a trained checkpoint.

The mask is an 8-bit grey image of the photo's size: black (< 128) marks what stays sharp, white what is
blurred. A checkpoint trained on patch masks (`data.mask_kind=patch`) also takes the 3-level mask
0 / 128 / 255 (sharp / partial blur / full blur); a binary mask works for it too.

Scale: the network learnt blur radii in pixels on training frames of a few hundred pixels (at most
`render.max_radius` px). On a photo whose long side exceeds `--max-side` (default 256) the generator runs on a
copy downscaled to that size; its per-pixel choice of blur is upsampled, and the blur itself (the blur-stack head,
radii scaled by the same factor, so the blur keeps the proportions it has in training) and the keep-focus
composite are computed on the full-resolution photo, so the subject keeps every pixel and the bokeh is not
upscaled. `--max-side 0` runs the generator at full resolution (slower; the blur then has the training size in
pixels and looks relatively smaller on a large photo).

The input is padded to the network's multiple (`Defocuser.multiple`) with reflected pixels (edge pixels when the
photo is smaller than half a multiple) and a "blur" mask, and the output is cropped back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from defocus_lit.errors import UserError
from defocus_lit.imageio import read_gray, read_rgb, write_rgb
from defocus_lit.models.checkpoint import load_checkpoint
from defocus_lit.models.defocuser import Defocuser
from defocus_lit.visualize import to_uint8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg")
DEVICES = ("auto", "cpu", "cuda")
MAX_SIDE = 256  # px, the generator's working long side: the training crops' scale, and fast


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint from `defocus-lit train` (.ckpt)")
    parser.add_argument("--image", required=True, help="photo (PNG/JPEG/...) or a folder of photos")
    parser.add_argument("--mask", required=True,
                        help="grey mask of the photo's size, black = keep sharp (or a folder: paired by file stem)")
    parser.add_argument("--out", required=True, help="output .png/.jpg (or a folder, for folder input)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto = CUDA when present, else CPU")
    parser.add_argument("--max-side", type=int, default=MAX_SIDE, metavar="PX",
                        help="run the network on larger photos at this long side; the blur is still applied at "
                             f"full resolution (default: {MAX_SIDE}; 0 = network at full resolution)")


def run(args: argparse.Namespace) -> int:
    image, mask, out = Path(args.image), Path(args.mask), Path(args.out)
    if not image.exists():
        raise UserError(f"{image}: no such file or folder")
    folder = image.is_dir()
    if folder != mask.is_dir():
        raise UserError(f"{mask if folder else image}: --image and --mask must both be files or both be folders")
    if not folder and out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserError(f"{out}: output must end in {', '.join(OUTPUT_SUFFIXES)}")
    if folder and out.exists() and not out.is_dir():
        raise UserError(f"{out}: for folder input --out must be a folder")
    jobs = pair_folders(image, mask) if folder else []
    device = select_device(args.device)
    model, cfg = load_checkpoint(args.ckpt)
    model.to(device)
    start = time.perf_counter()
    if folder:
        predict_folder(model, cfg.data.mask_kind, jobs, out, device, args.max_side)
        print(f"wrote {len(jobs)} images to {out} ({device.type}, {time.perf_counter() - start:.1f} s)")
    else:
        predict_file(model, cfg.data.mask_kind, image, mask, out, device, args.max_side)
        print(f"wrote {out} ({device.type}, {time.perf_counter() - start:.1f} s)")
    return 0


# ----- inputs -------------------------------------------------------------------------------------------------
def select_device(name: str) -> torch.device:
    """"auto" = CUDA when available, else CPU; "cuda" without a GPU is an error."""
    if name not in DEVICES:
        raise UserError(f"--device: '{name}' is not one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available (use --device cpu or auto)")
    return torch.device(name)


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


def read_pair(image_path: Path, mask_path: Path, mask_kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The photo (H,W,3) uint8 and its mask (H,W) float32, checked to be the same size."""
    image = read_rgb(image_path)
    mask = read_mask(mask_path, mask_kind)
    if mask.shape != image.shape[:2]:
        (mh, mw), (ih, iw) = mask.shape, image.shape[:2]
        raise UserError(f"{mask_path}: mask is {mw}x{mh} but the image {image_path} is {iw}x{ih}")
    return image, mask


def icc_profile(path: str | os.PathLike) -> bytes | None:
    """The file's embedded ICC colour profile, if any (kept in the output so colours look the same)."""
    with Image.open(path) as img:
        return img.info.get("icc_profile")


def _images(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in files:
                raise UserError(f"{path}: two files with the stem '{path.stem}' ({files[path.stem].name}); "
                                "pairing is by stem")
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


# ----- the network --------------------------------------------------------------------------------------------
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


@torch.inference_mode()
def defocus(model: Defocuser, image: Tensor, mask: Tensor, max_side: int = 0) -> Tensor:
    """image (B,3,H,W) in [-1,1], mask (B,1,H,W) in [0,1] of any H, W, on the model's device
    -> (B,3,H,W) in [-1,1]. Above `max_side` (long side, 0 = never) the generator runs on a downscaled copy; its
    output is upsampled and the blur-stack head (radii scaled alike) and keep-focus run at full resolution."""
    h, w = image.shape[-2:]
    scale = max(h, w) / max_side if max_side else 1.0
    if scale <= 1:
        return model.finish(image, mask, _generator_output(model, image, mask))
    size = (max(1, round(h / scale)), max(1, round(w / scale)))
    raw = _generator_output(model, F.interpolate(image, size=size, mode="area"),
                            F.interpolate(mask, size=size, mode="nearest"))
    # blur-stack logits: the [1,2,1] filter first removes the generator's 2-px checkerboard, which upsampling
    # would magnify into a visible grid; an RGB output is an image (bicubic)
    if model.head is not None:
        raw = F.interpolate(_smooth(raw), size=(h, w), mode="bilinear", align_corners=False)
    else:
        raw = F.interpolate(raw, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)
    return model.finish(image, mask, raw, radius_scale=max(h / size[0], w / size[1]))


def _smooth(x: Tensor) -> Tensor:
    """(B,C,H,W) filtered by the separable [1,2,1]/4 kernel (edge pixels replicated): zero response at the
    Nyquist frequency."""
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device) / 4
    kernel = (kernel[:, None] * kernel[None, :]).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])


def _generator_output(model: Defocuser, image: Tensor, mask: Tensor) -> Tensor:
    """The final generator output for any size: padded to the network's multiple, cropped back."""
    h, w = image.shape[-2:]
    padded_image, padded_mask, (top, left) = pad_to_multiple(image, mask, model.multiple)
    return model.output_raw(padded_image, padded_mask)[..., top:top + h, left:left + w]


def defocus_array(model: Defocuser, image: np.ndarray, mask: np.ndarray, device: torch.device,
                  max_side: int = 0) -> np.ndarray:
    """image (H,W,3) uint8 sRGB, mask (H,W) float32 in [0,1] -> defocused (H,W,3) uint8."""
    x = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float().div(127.5).sub(1)
    m = torch.from_numpy(mask).to(device)[None, None]
    return to_uint8(defocus(model, x, m, max_side)[0])


def predict_file(model: Defocuser, mask_kind: str, image_path: Path, mask_path: Path, out: Path,
                 device: torch.device, max_side: int = 0) -> None:
    """Defocus one photo and write it (atomically) with the input's size and ICC profile."""
    image, mask = read_pair(image_path, mask_path, mask_kind)
    write_rgb(out, defocus_array(model, image, mask, device, max_side), icc_profile=icc_profile(image_path))


def predict_folder(model: Defocuser, mask_kind: str, jobs: list[tuple[Path, Path, str]], out_dir: Path,
                   device: torch.device, max_side: int = 0) -> None:
    """Every pair into a hidden staging folder beside `out_dir`, moved into `out_dir` only when all succeeded,
    so a bad file leaves no partial output."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.predict-", dir=out_dir.parent))
    try:
        for image_path, mask_path, name in tqdm(jobs, desc="predict", unit="image"):
            predict_file(model, mask_kind, image_path, mask_path, staging / name, device, max_side)
        out_dir.mkdir(exist_ok=True)
        for _, _, name in jobs:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
