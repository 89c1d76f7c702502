"""Subject selection (`defocus_lit.select`) and the `defocus-lit mask` command, on synthetic photos made here: a
textured subject with a thin arm on a textured background."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from defocus_lit.cli import main
from defocus_lit.errors import UserError
from defocus_lit.select import BACKGROUND, SUBJECT, UNKNOWN, Box, parse_box, read_strokes, select_subject


def scene(height: int = 180, width: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H,W,3) uint8 photo and (H,W) bool true subject: a warm ellipse with a 3 px arm (scaled with the size)
    on cool, noisy stripes; both textured, so neither is one flat colour."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    subject = ((rows - 0.55) / 0.3) ** 2 + ((cols - 0.45) / 0.2) ** 2 < 1
    arm = max(1, round(3 * height / 180))
    subject[round(0.5 * height) : round(0.5 * height) + arm, round(0.45 * width) : round(0.85 * width)] = True
    stripes = (np.sin(cols * 40) > 0)[..., None]
    background = np.where(stripes, [40, 110, 150], [70, 140, 110])
    foreground = np.where((np.sin(rows * 60) > 0)[..., None], [200, 90, 50], [230, 150, 70])
    photo = np.where(subject[..., None], foreground, background) + rng.normal(0, 12, (height, width, 3))
    return np.clip(photo, 0, 255).astype(np.uint8), subject


def margin_box(truth: np.ndarray, margin: float = 0.08) -> Box:
    rows, cols = np.nonzero(truth)
    dx, dy = margin * (cols.max() - cols.min()), margin * (rows.max() - rows.min())
    height, width = truth.shape
    return Box(
        max(0, int(cols.min() - dx)),
        max(0, int(rows.min() - dy)),
        min(width, int(cols.max() + 1 + dx)),
        min(height, int(rows.max() + 1 + dy)),
    )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_a_box_snaps_to_the_subject_and_beats_the_box_alone():
    photo, truth = scene()
    box = margin_box(truth)
    snapped = select_subject(photo, box)
    box_alone = np.zeros_like(truth)
    box_alone[box.y0 : box.y1, box.x0 : box.x1] = True
    assert snapped.shape == truth.shape and snapped.dtype == bool
    assert iou(snapped, truth) > 0.9 > iou(box_alone, truth) + 0.2
    assert snapped[truth].mean() > 0.9  # the thin arm stays mostly in
    assert not snapped[: box.y0].any() and not snapped[:, box.x1 :].any()  # nothing outside the box
    assert np.array_equal(snapped, select_subject(photo, box))  # the same input, the same mask


def test_a_large_photo_is_snapped_at_working_size_and_refined_at_full_resolution():
    photo, truth = scene(1500, 2000)
    snapped = select_subject(photo, margin_box(truth))
    assert iou(snapped, truth) > 0.9


def test_strokes_are_hard_constraints():
    photo, truth = scene()
    box = margin_box(truth)
    strokes = np.zeros(truth.shape, np.int8)
    strokes[100:110, 80:90] = BACKGROUND  # inside the subject
    strokes[box.y0 + 1 : box.y0 + 4, box.x0 + 1 : box.x0 + 30] = SUBJECT  # background inside the box
    strokes[5:8, 5:15] = SUBJECT  # outside the box: strokes win there too
    snapped = select_subject(photo, box, strokes)
    assert snapped[strokes == SUBJECT].all() and not snapped[strokes == BACKGROUND].any()
    assert iou(snapped, truth) > 0.8


def test_strokes_alone_grow_from_a_subject_stroke():
    photo, truth = scene()
    strokes = np.zeros(truth.shape, np.int8)
    strokes[60:140, 100:104] = SUBJECT  # across both colours of the subject
    strokes[10:14, 10:200] = BACKGROUND
    snapped = select_subject(photo, None, strokes)
    assert iou(snapped, truth) > 0.8


@pytest.mark.parametrize(
    ("box", "strokes", "message"),
    [
        (None, None, r"subject \(black\) stroke"),
        (Box(0, 0, 240, 180), None, "covers the whole photo"),
        (Box(10, 10, 50, 50), np.full((180, 240), BACKGROUND, np.int8), "whole box as background"),
    ],
)
def test_input_that_leaves_nothing_to_learn_from(box, strokes, message):
    photo, _ = scene()
    with pytest.raises(UserError, match=message):
        select_subject(photo, box, strokes)


def test_parse_box_clips_and_orders_corners():
    assert parse_box("10,20,110,90", 200, 100) == Box(10, 20, 110, 90)
    assert parse_box(" 110, 90 10 20 ", 200, 100) == Box(10, 20, 110, 90)  # dragged the other way, spaces
    assert parse_box("-5,10.4,250,99.6", 200, 100) == Box(0, 10, 200, 100)  # partly outside: clipped


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3", "four numbers"),
        ("1,2,3,4,5", "four numbers"),
        ("a,b,c,d", "four numbers"),
        ("1,2,nan,4", "four numbers"),
        ("", "four numbers"),
        ("10,10,10,50", "empty"),
        ("10,10,50,10.2", "empty"),
        ("-50,-50,-10,-10", "outside the photo"),
        ("200,0,300,50", "outside the photo"),
    ],
)
def test_parse_box_errors_name_the_option(text, message):
    with pytest.raises(UserError, match=f"^--box: .*{message}"):
        parse_box(text, 200, 100)


def test_read_strokes_convention(tmp_path):
    grey = np.full((4, 6), 128, np.uint8)
    grey[0, :2] = 0  # black: surely subject
    grey[1, :2] = 255  # white: surely background
    alpha = np.full((4, 6), 255, np.uint8)
    alpha[0, 1] = alpha[1, 1] = 0  # transparent: unknown, whatever its grey
    path = tmp_path / "strokes.png"
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(path)
    strokes = read_strokes(path, (4, 6))
    assert strokes.dtype == np.int8
    assert strokes[0, 0] == SUBJECT and strokes[1, 0] == BACKGROUND
    assert strokes[0, 1] == strokes[1, 1] == strokes[2, 0] == UNKNOWN
    Image.fromarray(grey).save(tmp_path / "grey.png")  # no alpha: the same levels
    assert read_strokes(tmp_path / "grey.png", (4, 6))[0, 1] == SUBJECT


def test_read_strokes_errors_name_the_file(tmp_path):
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.full((4, 6), 128, np.uint8)).save(tmp_path / "blank.png")
    (tmp_path / "text.png").write_text("not an image")
    for name, message in (
        ("small.png", "strokes are 6x4 but the photo is 8x5"),
        ("blank.png", "no stroke"),
        ("text.png", "not a readable image"),
        ("missing.png", "no such file"),
    ):
        shape = (4, 6) if name == "blank.png" else (5, 8)
        with pytest.raises(UserError, match=f"{name}: {message}"):
            read_strokes(tmp_path / name, shape)


def test_mask_command_writes_the_mask_predict_reads(tmp_path, capsys):
    photo, truth = scene()
    Image.fromarray(photo).save(tmp_path / "photo.png")
    box = margin_box(truth)
    out = tmp_path / "mask.png"
    argv = ["mask", "--image", str(tmp_path / "photo.png"), "--box", ",".join(map(str, box)), "--out", str(out)]
    assert main(argv) == 0
    assert str(out) in capsys.readouterr().out
    with Image.open(out) as img:
        assert img.mode == "L" and img.size == (240, 180)
        mask = np.asarray(img)
    assert set(np.unique(mask)) == {0, 255}
    assert iou(mask == 0, truth) > 0.9  # black = sharp = subject

    strokes = np.full(truth.shape, 128, np.uint8)
    strokes[60:140, 100:104] = 0
    strokes[10:14, 10:200] = 255
    Image.fromarray(strokes).save(tmp_path / "strokes.png")
    assert (
        main(
            [
                "mask",
                "--image",
                str(tmp_path / "photo.png"),
                "--strokes",
                str(tmp_path / "strokes.png"),
                "--out",
                str(out),
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--box", "1,2,3"], "--box"),
        (["--box", "10,10,10,50"], "--box"),
        (["--box", "500,500,600,600"], "--box"),
        (["--strokes", "small.png"], "small.png"),
        (["--strokes", "missing.png"], "missing.png"),
        ([], "--box"),
        (["--box", "10,10,50,50", "--out", "mask.jpg"], "mask.jpg"),
    ],
)
def test_mask_command_bad_input_is_one_error_line_and_no_file(flags, named, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo, _ = scene()
    Image.fromarray(photo).save("photo.png")
    Image.fromarray(np.zeros((4, 6), np.uint8)).save("small.png")
    assert main(["mask", "--image", "photo.png", "--out", "mask.png", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and named in err[0]
    assert not (tmp_path / "mask.png").exists() and not (tmp_path / "mask.jpg").exists()
