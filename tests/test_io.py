"""Image IO as users have their files: masks of every PIL mode on one grey scale, photos converted to RGB once,
colour profiles that describe the pixels, and atomic writes that name a folder they cannot make and clean up
after killed processes."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from defocus_lit import io
from defocus_lit.errors import UserError
from defocus_lit.io import atomic_path, icc_profile, read_gray, read_mask, read_mask_grey, read_rgb, write_rgb

# black (in focus) on the left half, white elsewhere
SHARP = np.zeros((6, 8), bool)
SHARP[:, :4] = True
GREY = np.where(SHARP, 0, 255).astype(np.uint8)


def _palette(path: Path, transparent_index: int | None = None) -> None:
    img = Image.fromarray((GREY == 255).astype(np.uint8), "P")
    img.putpalette([0, 0, 0, 255, 255, 255])  # two colours: index 0 black, index 1 white
    extra = {} if transparent_index is None else {"transparency": transparent_index}
    img.save(path, **extra)


MASK_WRITERS = {
    "1": lambda p: Image.fromarray(GREY == 255).convert("1").save(p),
    "P": _palette,
    "L": lambda p: Image.fromarray(GREY).save(p),
    "LA": lambda p: Image.fromarray(np.dstack([GREY, np.full_like(GREY, 255)]), "LA").save(p),
    "RGB": lambda p: Image.fromarray(np.dstack([GREY] * 3)).save(p),
    "RGBA": lambda p: Image.fromarray(np.dstack([GREY] * 3 + [np.full_like(GREY, 255)])).save(p),
    "I;16": lambda p: Image.fromarray(GREY.astype(np.uint16) * 257).save(p),
}


@pytest.mark.parametrize("mode", sorted(MASK_WRITERS))
def test_a_mask_of_any_mode_reads_as_grey_0_to_255(mode, tmp_path):
    path = tmp_path / f"mask_{mode.replace(';', '')}.png"
    MASK_WRITERS[mode](path)
    if mode in ("1", "P", "LA", "RGBA"):
        assert Image.open(path).mode == mode  # the file really is in that mode
    assert read_mask_grey(path).tolist() == GREY.tolist()
    assert (read_mask(path) == 0).tolist() == SHARP.tolist()
    assert (read_mask(path, "patch") == 0).tolist() == SHARP.tolist()


def test_transparent_mask_pixels_count_as_white(tmp_path):
    """A black shape on a transparent background: the shape stays sharp, the transparent rest is blurred."""
    alpha = np.where(SHARP, 255, 0).astype(np.uint8)
    Image.fromarray(np.dstack([np.zeros_like(GREY)] * 3 + [alpha]), "RGBA").save(tmp_path / "cutout.png")
    assert (read_mask(tmp_path / "cutout.png") == 0).tolist() == SHARP.tolist()
    _palette(tmp_path / "p.png", transparent_index=0)  # black made transparent: nothing left in focus
    with pytest.raises(UserError, match="no in-focus pixel"):
        read_mask(tmp_path / "p.png")


def test_16_bit_depth_keeps_its_values(tmp_path):
    depth = np.array([[0, 1000, 4000, 65535]], np.uint16)
    Image.fromarray(depth).save(tmp_path / "d.png")
    got = read_gray(tmp_path / "d.png")
    assert got.dtype == np.uint16 and got.tolist() == depth.tolist()


def test_mask_with_no_sharp_pixel_is_an_error_and_all_sharp_a_warning(tmp_path, capsys):
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "white.png")
    with pytest.raises(UserError, match="white.png: the mask has no in-focus pixel"):
        read_mask(tmp_path / "white.png")
    Image.fromarray(np.zeros((4, 4), bool)).convert("1").save(tmp_path / "black.png")
    assert (read_mask(tmp_path / "black.png") == 0).all()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "black.png" in err[0] and "every pixel" in err[0]
    read_mask(tmp_path / "black.png", "patch")  # patch checkpoints too
    assert "every pixel" in capsys.readouterr().err


RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)


def test_photos_of_other_modes_become_rgb(tmp_path):
    Image.fromarray(RGB).convert("P").save(tmp_path / "p.png")
    rgba = np.dstack([RGB, np.array([[255, 255, 0, 255]], np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.array([[0, 32896, 65535]], np.uint16)).save(tmp_path / "grey16.png")
    Image.fromarray(np.array([[0, 128, 255]], np.uint8), "L").convert("LA").save(tmp_path / "la.png")
    assert read_rgb(tmp_path / "p.png").tolist() == RGB.tolist()
    assert read_rgb(tmp_path / "rgba.png").tolist() == [[[255, 0, 0], [0, 255, 0], [255, 255, 255], [255, 255, 255]]]
    assert read_rgb(tmp_path / "grey16.png")[0, :, 0].tolist() == [0, 128, 255]  # scaled, not clipped to white
    assert read_rgb(tmp_path / "la.png")[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_photo_becomes_rgb_and_loses_its_cmyk_profile(tmp_path, capsys):
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "plain.jpg")  # red ink
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    cmyk_profile = srgb[:16] + b"CMYK" + srgb[20:]  # tagged CMYK (littleCMS cannot use it: the fallback path)
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "tagged.jpg", icc_profile=cmyk_profile)
    for name in ("plain.jpg", "tagged.jpg"):
        rgb = read_rgb(tmp_path / name)
        assert rgb.shape == (6, 8, 3) and (np.abs(rgb.astype(int) - [255, 0, 0]) <= 8).all(), name
    assert icc_profile(tmp_path / "tagged.jpg") is None  # it would not describe the RGB pixels
    assert "tagged.jpg" in capsys.readouterr().err
    Image.fromarray(RGB).save(tmp_path / "srgb.png", icc_profile=srgb)
    assert icc_profile(tmp_path / "srgb.png") == srgb  # an RGB profile is kept
    write_rgb(tmp_path / "out.jpg", read_rgb(tmp_path / "tagged.jpg"), icc_profile(tmp_path / "tagged.jpg"))
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.mode == "RGB" and "icc_profile" not in out.info


def test_out_under_a_folder_that_cannot_be_made_names_it(tmp_path):
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(UserError, match=r"file/sub: cannot create this folder"):
        write_rgb(tmp_path / "file" / "sub" / "o.png", RGB)
    assert (tmp_path / "file").read_text() == "in the way"


def test_atomic_path_removes_temporaries_of_dead_processes_only(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = io._host()
    stale = tmp_path / f".d.h5.{host}.{dead_pid}.tmp"
    stale_dir = tmp_path / f".report.{host}.{dead_pid}.tmp"
    alive = tmp_path / f".d.h5.{host}.{os.getppid()}.tmp"  # the parent of this process runs
    elsewhere = tmp_path / f".d.h5.othernode.{dead_pid}.tmp"  # another machine's process: not ours to judge
    stale.write_bytes(b"half"), stale_dir.mkdir(), alive.write_bytes(b"busy"), elsewhere.write_bytes(b"busy")
    with atomic_path(tmp_path / "d.h5") as tmp:
        tmp.write_bytes(b"done")
    assert (tmp_path / "d.h5").read_bytes() == b"done"
    assert not stale.exists() and not stale_dir.exists() and alive.exists() and elsewhere.exists()


def test_cli_render_with_a_1_bit_mask_blurs_and_warns_on_an_all_sharp_one(tmp_path, capsys):
    from defocus_lit.cli import main

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    depth = np.tile(np.linspace(1000, 5000, 32), (32, 1)).astype(np.uint16)
    Image.fromarray(depth).save(tmp_path / "depth.png")
    mask = np.ones((32, 32), bool)
    mask[:, :8] = False  # black (sharp) on the near side
    Image.fromarray(mask).convert("1").save(tmp_path / "m1.png")
    args = ["render", "--image", str(tmp_path / "img.png"), "--depth", str(tmp_path / "depth.png")]
    assert main([*args, "--mask", str(tmp_path / "m1.png"), "--out", str(tmp_path / "o.png")]) == 0
    out = capsys.readouterr().out
    top = float(out.split("blur radius ")[1].split("-")[1].split(" ")[0])
    assert top > 1.0, out  # the far side is blurred (a 1-bit mask once read as all sharp: 0.0-0.0 px)
    Image.fromarray(np.zeros((32, 32), bool)).convert("1").save(tmp_path / "black.png")
    assert main([*args, "--mask", str(tmp_path / "black.png"), "--out", str(tmp_path / "o2.png")]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "black.png" in err and "every pixel" in err
