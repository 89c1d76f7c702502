"""`defocus-lit predict`: any image size, masks, folders, colour profile, and one-line errors on bad input."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from defocus_lit import io
from defocus_lit.cli import main
from defocus_lit.errors import UserError
from defocus_lit.io import read_mask
from defocus_lit.models.defocuser import BlurStack, Defocuser
from defocus_lit.models.inference import blur_radius, defocus, guessed_amount, pad_to_multiple
from defocus_lit.ops.masks import keep_focus


def photo(path: Path, height: int, width: int, icc: bytes | None = None) -> np.ndarray:
    rgb = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, icc_profile=icc) if icc else Image.fromarray(rgb).save(path)
    return rgb


def left_sharp_mask(path: Path, height: int, width: int) -> np.ndarray:
    """Black (keep sharp) on the left half, white elsewhere; returns the bool in-focus map."""
    grey = np.full((height, width), 255, np.uint8)
    grey[:, : width // 2] = 0
    Image.fromarray(grey).save(path)
    return grey == 0


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_odd_size_photo_keeps_size_profile_and_sharp_pixels(tiny_checkpoint, tmp_path, capsys):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = photo(tmp_path / "in.png", 37, 50, icc)
    sharp = left_sharp_mask(tmp_path / "mask.png", 37, 50)
    out = tmp_path / "out.png"
    assert (
        main(
            [
                "predict",
                "--ckpt",
                str(tiny_checkpoint),
                "--image",
                str(tmp_path / "in.png"),
                "--mask",
                str(tmp_path / "mask.png"),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert str(out) in capsys.readouterr().out
    result = read(out)
    assert result.shape == rgb.shape
    assert Image.open(out).info.get("icc_profile") == icc
    # keep_focus: the in-focus half is the input exactly, so padding and cropping are aligned
    assert np.array_equal(result[sharp], rgb[sharp])
    assert not np.array_equal(result[~sharp], rgb[~sharp])


def test_tiny_photo_and_jpeg_output(tiny_checkpoint, tmp_path):
    photo(tmp_path / "in.png", 3, 5)
    left_sharp_mask(tmp_path / "mask.png", 3, 5)
    out = tmp_path / "out.jpg"
    assert (
        main(
            [
                "predict",
                "--ckpt",
                str(tiny_checkpoint),
                "--image",
                str(tmp_path / "in.png"),
                "--mask",
                str(tmp_path / "mask.png"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.size == (5, 3)


def test_folder_mode_pairs_by_stem(tiny_checkpoint, tmp_path):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    photo(images / "a.png", 16, 24), photo(images / "b.jpg", 20, 12)
    left_sharp_mask(masks / "a.png", 16, 24), left_sharp_mask(masks / "b.png", 20, 12)
    assert (
        main(
            ["predict", "--ckpt", str(tiny_checkpoint), "--image", str(images), "--mask", str(masks), "--out", str(out)]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg"]
    assert read(out / "b.jpg").shape == (20, 12, 3)


def test_folder_mode_lists_unpaired_files_and_writes_nothing(tiny_checkpoint, tmp_path, capsys):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    photo(images / "a.png", 16, 16), photo(images / "lonely.png", 16, 16)
    left_sharp_mask(masks / "a.png", 16, 16), left_sharp_mask(masks / "stray.png", 16, 16)
    assert (
        main(
            ["predict", "--ckpt", str(tiny_checkpoint), "--image", str(images), "--mask", str(masks), "--out", str(out)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "lonely.png" in err and "stray.png" in err and "a.png" not in err
    assert not out.exists()


def test_folder_mode_writes_the_good_images_and_names_each_bad_one(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    photo(images / "a.png", 16, 16), photo(images / "b.png", 16, 16), photo(images / "d.png", 16, 16)
    (images / "c.png").write_bytes(b"not a png at all")  # corrupt
    photo(images / "e.png", 16, 16)
    (images / "t.png").write_bytes((images / "e.png").read_bytes()[:200])  # truncated
    photo(images / "u.png", 16, 16)
    (images / "u.png").chmod(0)  # unreadable
    if os.geteuid() == 0:  # root reads it anyway: make the open fail as it does for anyone else
        real_open = io.Image.open
        denied = lambda p, *a, **k: _raise(PermissionError(13, "Permission denied", str(p)))  # noqa: E731
        monkeypatch.setattr(io.Image, "open", lambda p, *a, **k: denied(p) if Path(p).name == "u.png" else real_open(p))
    for name in ("a", "c", "d", "e", "t", "u"):
        left_sharp_mask(masks / f"{name}.png", 16, 16)
    left_sharp_mask(masks / "b.png", 16, 8)  # b: wrong size
    assert (
        main(
            ["predict", "--ckpt", str(tiny_checkpoint), "--image", str(images), "--mask", str(masks), "--out", str(out)]
        )
        == 2
    )
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    for bad in ("b.png", "c.png", "t.png", "u.png"):
        assert sum(bad in line for line in error_lines[:-1]) == 1, (bad, error_lines)
    assert any("Permission denied" in line for line in error_lines)
    assert len(error_lines) == 5 and "4 of 7 images" in error_lines[-1]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "d.png", "e.png"]  # the good ones, complete
    assert Image.open(out / "a.png").size == (16, 16) and not list(tmp_path.rglob("*.tmp"))


def _raise(err: Exception):
    raise err


def test_cmyk_photo_gives_an_rgb_output_without_its_cmyk_profile(tiny_checkpoint, tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("CMYK", (20, 12), (0, 255, 255, 0)).save(tmp_path / "in.jpg", icc_profile=srgb[:16] + b"CMYK" + srgb[20:])
    left_sharp_mask(tmp_path / "mask.png", 12, 20)
    out = tmp_path / "out.png"
    argv = ["predict", "--ckpt", str(tiny_checkpoint), "--image", str(tmp_path / "in.jpg")]
    assert main([*argv, "--mask", str(tmp_path / "mask.png"), "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.mode == "RGB" and "icc_profile" not in img.info
        assert (np.abs(np.asarray(img)[:, :10].astype(int) - [255, 0, 0]) <= 8).all()  # the sharp half: red


def test_out_under_a_folder_that_cannot_be_created_is_one_error(tiny_checkpoint, tmp_path, capsys):
    photo(tmp_path / "in.png", 8, 8), left_sharp_mask(tmp_path / "mask.png", 8, 8)
    (tmp_path / "blocker").write_text("a file, not a folder")
    argv = ["predict", "--ckpt", str(tiny_checkpoint), "--image", str(tmp_path / "in.png")]
    for out in ("blocker/sub/out.png", "blocker/out.png"):
        assert main([*argv, "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "blocker" in err[0] and "cannot create" in err[0]


def test_read_mask_binary_and_patch(tmp_path):
    levels = np.array([[0, 100, 128, 200, 255]], np.uint8)
    Image.fromarray(levels).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[0, 0, 1, 1, 1]]
    assert read_mask(tmp_path / "m.png", "patch").tolist() == [[0, 0.5, 0.5, 1, 1]]


def test_pad_to_multiple_centres_the_photo():
    image, mask = torch.rand(1, 3, 10, 17), torch.zeros(1, 1, 10, 17)
    padded, padded_mask, (top, left) = pad_to_multiple(image, mask, 8)
    assert padded.shape[-2:] == (16, 24) and (top, left) == (3, 3)
    assert torch.equal(padded[..., top : top + 10, left : left + 17], image)
    assert padded_mask.sum() == 16 * 24 - 10 * 17  # padding is "blur" (1), the photo keeps its mask


# ----- bad input: one line `error: ...` naming the file, exit 2, no output -------------------------------------
def _bad_checkpoints(tiny_checkpoint: Path, folder: Path) -> list[Path]:
    text = folder / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    truncated = folder / "truncated.ckpt"
    data = tiny_checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return [text, truncated]


def _assert_one_line_error(capsys, name: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and name in err and len(err.splitlines()) == 1, err


def test_bad_checkpoints(tiny_checkpoint, tmp_path, capsys):
    photo(tmp_path / "in.png", 16, 16)
    left_sharp_mask(tmp_path / "mask.png", 16, 16)
    for ckpt in _bad_checkpoints(tiny_checkpoint, tmp_path):
        out = tmp_path / "out.png"
        assert (
            main(
                [
                    "predict",
                    "--ckpt",
                    str(ckpt),
                    "--image",
                    str(tmp_path / "in.png"),
                    "--mask",
                    str(tmp_path / "mask.png"),
                    "--out",
                    str(out),
                ]
            )
            == 2
        )
        _assert_one_line_error(capsys, ckpt.name)
        assert not out.exists()


@pytest.mark.parametrize("case", ["size_mismatch", "no_focus", "unreadable_image"])
def test_bad_image_or_mask(case, tiny_checkpoint, tmp_path, capsys):
    image, mask, out = tmp_path / "in.png", tmp_path / "mask.png", tmp_path / "out.png"
    photo(image, 16, 16)
    left_sharp_mask(mask, 16, 16)
    if case == "size_mismatch":
        left_sharp_mask(mask, 16, 12)
        named = "mask.png"
    elif case == "no_focus":
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(mask)
        named = "mask.png"
    else:
        image.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        named = "in.png"
    assert (
        main(["predict", "--ckpt", str(tiny_checkpoint), "--image", str(image), "--mask", str(mask), "--out", str(out)])
        == 2
    )
    _assert_one_line_error(capsys, named)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_large_photo_runs_at_max_side_and_keeps_full_resolution_focus(tiny_checkpoint, tmp_path):
    rgb = photo(tmp_path / "big.png", 90, 130)
    sharp = left_sharp_mask(tmp_path / "mask.png", 90, 130)
    outs = {}
    for max_side in (40, 0):
        outs[max_side] = tmp_path / f"out{max_side}.png"
        assert (
            main(
                [
                    "predict",
                    "--ckpt",
                    str(tiny_checkpoint),
                    "--image",
                    str(tmp_path / "big.png"),
                    "--mask",
                    str(tmp_path / "mask.png"),
                    "--out",
                    str(outs[max_side]),
                    "--max-side",
                    str(max_side),
                ]
            )
            == 0
        )
    small, full = read(outs[40]), read(outs[0])
    assert small.shape == full.shape == rgb.shape
    assert np.array_equal(small[sharp], rgb[sharp])  # the subject keeps every full-resolution pixel
    assert not np.array_equal(small[~sharp], full[~sharp])  # the rest was defocused at the smaller size


class OneLevel(torch.nn.Module):
    """A generator whose blur-stack logits pick level `level` of `levels` everywhere."""

    def __init__(self, level: int, levels: int):
        super().__init__()
        self.level, self.levels = level, levels

        self.sizes: list[tuple[int, int]] = []  # the (H, W) of every input it was given

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(image.shape[2:]))
        raw = -torch.ones(image.shape[0], self.levels, *image.shape[2:])
        raw[:, self.level] = 1
        return raw


@pytest.mark.parametrize("spread", [False, True])
def test_downscaled_generator_blurs_at_full_resolution_with_scaled_radii(spread):
    model = Defocuser(OneLevel(2, 3), BlurStack([0.0, 1.0, 2.0], spread), keep_focus=True, multiple=4).eval()
    image = torch.rand(1, 3, 60, 90) * 2 - 1
    mask = torch.ones(1, 1, 60, 90)
    mask[..., :30] = 0
    out = defocus(model, image, mask, max_side=30)  # the generator sees 20x30: 3x smaller
    raw = OneLevel(2, 3)(image, mask)
    expected = keep_focus(model.head(image, raw, mask, radius_scale=3.0), image, mask)  # a 6 px disk on the photo
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, keep_focus(model.head(image, raw, mask), image, mask), atol=1e-2)


def test_generator_sees_the_photo_at_its_training_scale_and_the_radii_stay_as_trained():
    """A model trained on 30-px frames decides a 90-px photo's blur on a 3x smaller copy; up to --max-side the
    radii are the trained ones (pixels at the renderer's scale), above it they grow with the photo."""
    generator = OneLevel(2, 3)
    model = Defocuser(generator, BlurStack([0.0, 1.0, 2.0]), keep_focus=True, multiple=1).eval()
    model.train_side = 30
    image = torch.rand(1, 3, 60, 90) * 2 - 1
    mask = torch.ones(1, 1, 60, 90)
    mask[..., :30] = 0
    raw = OneLevel(2, 3)(image, mask)
    for max_side, radius_scale in ((90, 1.0), (45, 2.0), (20, 4.5)):
        out = defocus(model, image, mask, max_side=max_side)
        assert generator.sizes[-1] == ((20, 30) if max_side > 30 else (13, 20))  # the smaller side of the two
        torch.testing.assert_close(
            out, keep_focus(model.head(image, raw, mask, radius_scale=radius_scale), image, mask)
        )


def test_checkpoint_records_the_training_frames_side(tiny_checkpoint):
    from defocus_lit.models.checkpoint import load_checkpoint

    model, cfg = load_checkpoint(tiny_checkpoint)
    assert model.train_side == max(cfg.data.synthetic.size) == 64


# ----- --strength: the blur amount ----------------------------------------------------------------------------
@pytest.mark.parametrize("spread", [False, True])
def test_strength_scales_each_level_radius_and_clamps_at_the_top(spread):
    """On a one-level stack, strength s is the head with its radii times s (at most the top radius), and the
    downscaled generator's radius_scale multiplies after the clamp."""
    radii = [0.0, 2.0, 4.0]
    model = Defocuser(OneLevel(1, 3), BlurStack(radii, spread), keep_focus=True, multiple=4).eval()
    image = torch.rand(1, 3, 60, 90) * 2 - 1
    mask = torch.ones(1, 1, 60, 90)
    mask[..., :30] = 0
    raw = OneLevel(1, 3)(image, mask)
    for strength, scaled in ((0.5, [0.0, 1.0, 2.0]), (3.0, [0.0, 4.0, 4.0])):  # 3 x 2 px clamps at 4 px
        out = defocus(model, image, mask, max_side=30, strength=strength)  # the generator sees 20x30: 3x smaller
        expected = keep_focus(BlurStack(scaled, spread)(image, raw, mask, radius_scale=3.0), image, mask)
        torch.testing.assert_close(out, expected)
        assert not torch.allclose(out, defocus(model, image, mask, max_side=30), atol=1e-2)


def test_blur_radius_is_the_radius_defocus_applies():
    """The per-pixel radius `evaluate` reports: the chosen level's, times the downscaled generator's radius scale
    and the strength (clamped at the top level as the blur is); none for an RGB head."""
    model = Defocuser(OneLevel(2, 3), BlurStack([0.0, 1.0, 2.0]), keep_focus=True, multiple=4).eval()
    image = torch.rand(1, 3, 60, 90) * 2 - 1
    mask = torch.ones(1, 1, 60, 90)
    for max_side, strength, radius in ((0, 1.0, 2.0), (30, 1.0, 6.0), (30, 0.5, 3.0), (30, 2.0, 6.0)):
        got = blur_radius(model, image, mask, max_side, strength)
        assert got.shape == (1, 1, 60, 90)
        torch.testing.assert_close(got, torch.full_like(got, radius), atol=1e-3, rtol=0)
    rgb = Defocuser(OneLevel(2, 3), None, keep_focus=True, multiple=4).eval()
    assert blur_radius(rgb, image, mask, 30) is None


class AmountLevel(torch.nn.Module):
    """A generator that reads the amount channel (the mask's second, `amount_code`): told an amount, it picks the
    level of `radii` nearest to it (in the head's px); told "unknown" (0), level 1. Records what it was told (nan =
    unknown)."""

    def __init__(self, radii: list[float]):
        super().__init__()
        self.radii = radii
        self.told: list[float] = []

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert mask.shape[1] == 2 and bool((mask[:, 1] == mask[:, 1, :1, :1]).all())  # one value per sample
        code = float(mask[0, 1, 0, 0])
        self.told.append(float("nan") if code == 0 else 2**code - 1)
        level = 1 if code == 0 else int(np.argmin([abs(r - self.told[-1]) for r in self.radii]))
        raw = -torch.ones(image.shape[0], len(self.radii), *image.shape[2:])
        raw[:, level] = 1
        return raw


def test_a_given_amount_is_told_in_the_heads_px_and_strength_multiplies_it():
    """--amount A (percent of the long side) reaches the generator as A/100 x long side / radius scale px (here a
    90-px photo whose radii are scaled 3x above max_side 30), times the strength; the head then draws the radius the
    generator chose, unscaled by the strength. No amount: the generator is told "unknown" and guesses, and the
    strength scales its radii. More than the top radius can draw is refused, naming --amount."""
    radii = [0.0, 2.0, 4.0]
    model = Defocuser(AmountLevel(radii), BlurStack(radii), keep_focus=True, multiple=4, amount_input=True).eval()
    image = torch.rand(1, 3, 60, 90) * 2 - 1
    mask = torch.ones(1, 1, 60, 90)
    for amount, strength, told, radius in ((20 / 3, 1.0, 2.0, 6.0), (10 / 3, 2.0, 2.0, 6.0), (12.0, 1.0, 3.6, 12.0)):
        got = blur_radius(model, image, mask, max_side=30, strength=strength, amount=amount)
        assert model.generator.told[-1] == pytest.approx(told)
        torch.testing.assert_close(got, torch.full_like(got, radius), atol=1e-3, rtol=0)
    guessed = blur_radius(model, image, mask, max_side=30, strength=0.5)  # level 1 (2 px) x 3 x 0.5
    assert np.isnan(model.generator.told[-1])
    torch.testing.assert_close(guessed, torch.full_like(guessed, 3.0), atol=1e-3, rtol=0)
    assert guessed_amount(model, image, mask, max_side=30).item() == pytest.approx(6 / 90 * 100, abs=1e-3)
    assert torch.equal(model(image, mask), defocus(model, image, mask))  # forward: the guess
    with pytest.raises(UserError, match=r"^--amount 14: more than this checkpoint's blur head can draw on a 90-px"):
        defocus(model, image, mask, max_side=30, amount=14.0)  # at most 13.3 (4 px x 3 on 90 px)
    with pytest.raises(UserError, match=r"^--amount 7: .* at --strength 2 \(at most 6.67"):
        defocus(model, image, mask, max_side=30, amount=7.0, strength=2.0)
    per_sample = model.generator_mask(torch.ones(2, 1, 4, 4), torch.tensor([3.0, float("nan")]))
    assert per_sample.shape == (2, 2, 4, 4) and per_sample[:, 1, 0, 0].tolist() == [2.0, 0.0]


def test_an_exact_amount_model_draws_the_amount_asked_wherever_its_generator_puts_the_blur():
    """exact_amount: told A, the head's radii are scaled so that the mean blur radius out of focus is A (percent of
    the long side) exactly, whatever blurred level the generator picked; the strength multiplies A; guessing stays
    as is."""
    radii = [0.0, 2.0, 4.0]
    model = Defocuser(OneLevel(1, 3), BlurStack(radii), True, 4, amount_input=True, exact_amount=True).eval()
    image = torch.rand(1, 3, 60, 90) * 2 - 1
    mask = torch.ones(1, 1, 60, 90)
    mask[..., :20] = 0
    for amount, strength in ((2.5, 1.0), (5.0, 1.0), (3.0, 2.0)):
        asked = amount * strength
        radius = blur_radius(model, image, mask, max_side=30, strength=strength, amount=amount)
        assert guessed_amount(model, image, mask, 30) is not None
        assert radius[mask > 0].mean().item() * 100 / 90 == pytest.approx(asked, rel=1e-4)
        out = defocus(model, image, mask, max_side=30, strength=strength, amount=amount)
        assert torch.equal(out[..., :20], image[..., :20])  # keep focus
    inexact = Defocuser(OneLevel(1, 3), BlurStack(radii), True, 4, amount_input=True).eval()
    for guessing in (model, inexact):
        torch.testing.assert_close(blur_radius(guessing, image, mask, 30), blur_radius(inexact, image, mask, 30))


@pytest.fixture
def no_amount_checkpoint(tiny_checkpoint, tmp_path) -> Path:
    """The tiny run's checkpoint as one trained before the amount input (no model.amount_input key), fresh weights."""
    from omegaconf import OmegaConf

    from defocus_lit.models.defocuser import build_defocuser

    checkpoint = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    cfg = OmegaConf.merge(checkpoint["hyper_parameters"]["cfg"], {"model": {"amount_input": False}})
    checkpoint["state_dict"] = {f"defocuser.{k}": v for k, v in build_defocuser(cfg).state_dict().items()}
    del cfg.model["amount_input"]
    checkpoint["hyper_parameters"]["cfg"] = OmegaConf.to_container(cfg)
    path = tmp_path / "no_amount.ckpt"
    torch.save(checkpoint, path)
    return path


def test_predict_amount_sets_the_blur_of_files_and_folders(tiny_checkpoint, no_amount_checkpoint, tmp_path, capsys):
    """--amount gives the output that amount of blur (the tiny model draws more for more); a file as in a folder;
    a checkpoint without the amount input still guesses, and refuses --amount in one line."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    photo(images / "a.png", 16, 24), left_sharp_mask(masks / "a.png", 16, 24)
    outs = {}
    for name, flags in {"guess": (), "2": ("--amount", "2"), "6": ("--amount", "6")}.items():
        assert _predict(tiny_checkpoint, images, masks, tmp_path / name, *flags) == 0
        assert _predict(tiny_checkpoint, images / "a.png", masks / "a.png", tmp_path / f"{name}.png", *flags) == 0
        outs[name] = read(tmp_path / name / "a.png")
        assert np.array_equal(read(tmp_path / f"{name}.png"), outs[name])  # a file as in a folder
    assert not np.array_equal(outs["2"], outs["6"]) and not np.array_equal(outs["2"], outs["guess"])
    assert _predict(no_amount_checkpoint, images / "a.png", masks / "a.png", tmp_path / "old.png") == 0
    capsys.readouterr()  # the folders' progress bars
    out = tmp_path / "old2.png"
    assert _predict(no_amount_checkpoint, images / "a.png", masks / "a.png", out, "--amount", "2") == 2
    _assert_one_line_error(capsys, "--amount 2: this checkpoint was trained without the amount input")
    assert not out.exists()


@pytest.mark.parametrize(
    "amount, message",
    [
        ("0", "--amount: must be a number > 0 (percent of the photo's long side), got 0"),
        ("-1", "--amount: must be a number > 0"),
        ("nan", "--amount: must be a number > 0"),
        ("abc", "defocus-lit predict: argument --amount: invalid float value: 'abc'"),
        ("80", "--amount 80: more than this checkpoint's blur head can draw on a 24-px photo"),
    ],
)
def test_bad_amounts_are_one_error_naming_amount(amount, message, tiny_checkpoint, tmp_path, capsys):
    photo(tmp_path / "in.png", 16, 24), left_sharp_mask(tmp_path / "mask.png", 16, 24)
    out = tmp_path / "out.png"
    try:
        status = _predict(tiny_checkpoint, tmp_path / "in.png", tmp_path / "mask.png", out, "--amount", amount)
    except SystemExit as stop:  # argparse's own error (not a number) exits from inside the parser
        status = stop.code
    assert status == 2
    _assert_one_line_error(capsys, message)
    assert not out.exists()


def test_a_checkpoint_told_a_strength_by_an_earlier_version_is_one_error(tiny_checkpoint, tmp_path, capsys):
    """Before the amount input, data.strength_range gave the generator a strength channel: such a checkpoint is
    named and refused (train it again), not a shape mismatch."""
    from omegaconf import OmegaConf

    checkpoint = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    cfg = OmegaConf.to_container(OmegaConf.create(checkpoint["hyper_parameters"]["cfg"]))
    del cfg["model"]["amount_input"]
    cfg["data"]["strength_range"] = [0.5, 2.0]
    checkpoint["hyper_parameters"]["cfg"] = cfg
    path = tmp_path / "strengths.ckpt"
    torch.save(checkpoint, path)
    photo(tmp_path / "in.png", 16, 16), left_sharp_mask(tmp_path / "mask.png", 16, 16)
    assert _predict(path, tmp_path / "in.png", tmp_path / "mask.png", tmp_path / "out.png") == 2
    _assert_one_line_error(capsys, f"{path}: its generator was told a blur strength")


def _predict(ckpt: Path, image: Path, mask: Path, out: Path, *flags: str) -> int:
    return main(["predict", "--ckpt", str(ckpt), "--image", str(image), "--mask", str(mask), "--out", str(out), *flags])


def test_strength_one_is_the_default_and_applies_to_files_and_folders(tiny_checkpoint, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    photo(images / "a.png", 16, 24), left_sharp_mask(masks / "a.png", 16, 24)
    outs = {}
    for name, flags in {"default": (), "1": ("--strength", "1"), "0.5": ("--strength", "0.5")}.items():
        assert _predict(tiny_checkpoint, images, masks, tmp_path / name, *flags) == 0
        assert _predict(tiny_checkpoint, images / "a.png", masks / "a.png", tmp_path / f"{name}.png", *flags) == 0
        outs[name] = read(tmp_path / name / "a.png")
        assert np.array_equal(read(tmp_path / f"{name}.png"), outs[name])  # a file as in a folder
    assert np.array_equal(outs["1"], outs["default"])  # bit-identical to no flag
    assert not np.array_equal(outs["0.5"], outs["default"])


@pytest.fixture
def rgb_checkpoint(tiny_checkpoint, tmp_path) -> Path:
    """The tiny run's checkpoint with an RGB head (model.head=rgb) and freshly initialised weights."""
    from omegaconf import OmegaConf

    from defocus_lit.models.defocuser import build_defocuser

    checkpoint = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    cfg = OmegaConf.merge(checkpoint["hyper_parameters"]["cfg"], {"model": {"head": "rgb"}})
    checkpoint["hyper_parameters"]["cfg"] = cfg
    checkpoint["state_dict"] = {f"defocuser.{k}": v for k, v in build_defocuser(cfg).state_dict().items()}
    path = tmp_path / "rgb.ckpt"
    torch.save(checkpoint, path)
    return path


def test_strength_needs_a_blur_head(rgb_checkpoint, tmp_path, capsys):
    photo(tmp_path / "in.png", 16, 16), left_sharp_mask(tmp_path / "mask.png", 16, 16)
    out = tmp_path / "out.png"
    assert _predict(rgb_checkpoint, tmp_path / "in.png", tmp_path / "mask.png", out, "--strength", "1") == 0
    out.unlink()
    assert _predict(rgb_checkpoint, tmp_path / "in.png", tmp_path / "mask.png", out, "--strength", "2") == 2
    _assert_one_line_error(
        capsys, "--strength 2: needs a checkpoint with a blur head (model.head=blur_spread or blur_stack)"
    )
    assert not out.exists()


@pytest.mark.parametrize("strength", ["0", "-1", "nan"])
def test_strength_must_be_positive(strength, tiny_checkpoint, tmp_path, capsys):
    photo(tmp_path / "in.png", 16, 16), left_sharp_mask(tmp_path / "mask.png", 16, 16)
    out = tmp_path / "out.png"
    assert _predict(tiny_checkpoint, tmp_path / "in.png", tmp_path / "mask.png", out, "--strength", strength) == 2
    _assert_one_line_error(capsys, "--strength: must be a number > 0")
    assert not out.exists()


def test_negative_max_side_is_one_error_and_writes_nothing(tiny_checkpoint, tmp_path, capsys):
    photo(tmp_path / "in.png", 16, 16), left_sharp_mask(tmp_path / "mask.png", 16, 16)
    out = tmp_path / "out.png"
    assert _predict(tiny_checkpoint, tmp_path / "in.png", tmp_path / "mask.png", out, "--max-side", "-5") == 2
    _assert_one_line_error(capsys, "--max-side: must be >= 0 px")
    assert not out.exists()


# ----- --box: the subject selected instead of a mask file ------------------------------------------------------
def _subject_photo(path: Path) -> np.ndarray:
    """A 64x96 photo: a red disk (the subject) on green-blue noise; returns the disk (bool)."""
    rng = np.random.default_rng(3)
    rgb = np.stack(
        [rng.integers(0, 60, (64, 96)), rng.integers(100, 200, (64, 96)), rng.integers(100, 255, (64, 96))], 2
    )
    rows, cols = np.mgrid[:64, :96]
    disk = (rows - 32) ** 2 + (cols - 40) ** 2 < 18**2
    rgb[disk] = [230, 30, 30]
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return disk


def test_predict_box_keeps_the_selected_subject_sharp(tiny_checkpoint, tmp_path):
    disk = _subject_photo(tmp_path / "in.png")
    out = tmp_path / "out.png"
    args = ["predict", "--ckpt", str(tiny_checkpoint), "--image", str(tmp_path / "in.png"), "--out", str(out)]
    assert main([*args, "--box", "19,11,61,53"]) == 0
    photo, result = read(tmp_path / "in.png"), read(out)
    same = (result == photo).all(axis=2)
    inner = disk & ~np.pad(~disk, 2, constant_values=True)[2:-2, 2:-2]  # the disk without its rim
    assert same[inner].mean() > 0.98 and same[~disk].mean() < 0.2  # the subject sharp, the rest blurred
    assert (
        main(["mask", "--image", str(tmp_path / "in.png"), "--box", "19,11,61,53", "--out", str(tmp_path / "m.png")])
        == 0
    )
    assert main([*args[:-1], str(tmp_path / "via_mask.png"), "--mask", str(tmp_path / "m.png")]) == 0
    assert np.array_equal(read(tmp_path / "via_mask.png"), result)  # the same as the mask command's file


@pytest.mark.parametrize(
    "box, message",
    [
        ("1,2,3", "--box"),
        ("10,10,10,40", "--box"),
        ("200,200,300,300", "--box"),
    ],
)
def test_bad_boxes_are_one_error_and_write_nothing(box, message, tiny_checkpoint, tmp_path, capsys):
    _subject_photo(tmp_path / "in.png")
    out = tmp_path / "out.png"
    assert (
        main(
            [
                "predict",
                "--ckpt",
                str(tiny_checkpoint),
                "--image",
                str(tmp_path / "in.png"),
                "--box",
                box,
                "--out",
                str(out),
            ]
        )
        == 2
    )
    _assert_one_line_error(capsys, message)
    assert not out.exists()


def test_box_needs_one_photo_and_excludes_a_mask(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    _subject_photo(folder / "a.png")
    args = ["predict", "--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "out")]
    assert main([*args, "--image", str(folder), "--box", "1,1,20,20"]) == 2
    _assert_one_line_error(capsys, "--box: selects the subject of one photo")
    with pytest.raises(SystemExit) as stop:
        main([*args, "--image", str(folder / "a.png"), "--box", "1,1,20,20", "--mask", str(folder / "a.png")])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
