"""`defocus-lit demo` without a browser: checkpoint discovery, mask conversion from painted layers, the Run handler
and its error messages, the page's controls. (The page in a real browser: tests/test_demo_browser.py.)"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the demo extra is not installed: pip install -e '.[demo]'")

from defocus_lit import demo_page as demo
from defocus_lit.cli import main
from defocus_lit.commands.demo import find_checkpoint, host_warning, list_examples
from defocus_lit.errors import UserError
from defocus_lit.models.inference import defocus_array

GREEN, AMBER, BLUE = ((34, 197, 94), (245, 158, 11), (59, 130, 246))  # the three brush colours


def _layer(shape: tuple[int, int], boxes: list[tuple[slice, slice, tuple[int, int, int], int]]) -> np.ndarray:
    """An RGBA editor layer, transparent except the given (rows, cols, colour, alpha) boxes."""
    layer = np.zeros((*shape, 4), np.uint8)
    for rows, cols, colour, alpha in boxes:
        layer[rows, cols, :3] = colour
        layer[rows, cols, 3] = alpha
    return layer


def _photo(h: int = 96, w: int = 128) -> np.ndarray:
    """Fine texture (noise) so any blur changes it a lot."""
    return (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def demo_model(tiny_checkpoint) -> demo.DemoModel:
    return demo.DemoModel.load(tiny_checkpoint, "cpu")


# ----- checkpoint and options ---------------------------------------------------------------------------------
def test_find_checkpoint_takes_the_newest_best(tmp_path):
    paths = [
        tmp_path / "outputs" / exp / run / "checkpoints" / name
        for exp, run, name in [
            ("patch_mask", "r1", "best-epoch=1.ckpt"),
            ("two_stage", "r2", "best-epoch=3.ckpt"),
            ("patch_mask", "r3", "last.ckpt"),
        ]
    ]
    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (time.time() + i * 10,) * 2)
    assert find_checkpoint(tmp_path / "outputs") == paths[1]  # last.ckpt is newer but not a best-*


def test_demo_without_checkpoint_says_run_make_train(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no checkpoint found") and "run `make train` first" in err
    assert "\n" not in err


def test_demo_bad_options_are_one_line_errors(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--ckpt", "missing.ckpt"]) == 2
    assert "missing.ckpt: no such checkpoint file" in capsys.readouterr().err
    assert main(["demo", "--ckpt", str(tiny_checkpoint), "--examples", "nowhere"]) == 2
    assert "--examples nowhere: no such folder" in capsys.readouterr().err
    assert main(["demo", "--ckpt", str(tiny_checkpoint), "--port", "70000"]) == 2
    assert "not a port number" in capsys.readouterr().err


def test_host_warning_only_off_localhost():
    assert host_warning("127.0.0.1", 7860) is None
    warning = host_warning("0.0.0.0", 7860)
    assert warning.startswith("warning:") and "no login" in warning


def test_examples_lists_photos_only(tmp_path):
    for name in ("b.jpg", "a.png", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_examples(tmp_path)] == ["a.png", "b.jpg"]
    (tmp_path / "a.png").unlink(), (tmp_path / "b.jpg").unlink()
    with pytest.raises(UserError, match="no photos"):
        list_examples(tmp_path)


def test_amount_slider_follows_the_checkpoint(demo_model):
    """Shown for a checkpoint trained with the amount input, up to what its blur head draws on a photo of
    --max-side px (the tiny run's 16-px top radius on 256 px: 6.25 %); hidden for one without the input, or an RGB
    head."""
    from defocus_lit.models.defocuser import Defocuser

    def slider(model: demo.DemoModel):
        page = demo.build_page(model, output_dir=Path("."))
        (found,) = [b for b in page.blocks.values() if getattr(b, "elem_id", None) == "amount"]
        return found

    shown = slider(demo_model)
    assert demo_model.takes_amount and shown.visible and (shown.minimum, shown.maximum) == (0.05, 6.25)
    model = demo_model.defocuser
    for head, amount_input in ((model.head, False), (None, True)):
        other = Defocuser(model.generator, head, True, model.multiple, amount_input=amount_input)
        assert not slider(replace(demo_model, defocuser=other)).visible


# ----- painted layers -> mask ---------------------------------------------------------------------------------
def test_binary_mask_from_painted_layer():
    layer = _layer((40, 60), [(slice(10, 20), slice(5, 25), GREEN, 255), (slice(30, 35), slice(0, 60), GREEN, 90)])
    mask = demo.mask_from_layers([layer], (40, 60), "binary")
    assert mask.dtype == np.float32 and mask.shape == (40, 60)
    assert (mask[10:20, 5:25] == 0).all()
    assert mask.sum() == 40 * 60 - 10 * 20  # the faint (alpha 90) brush edge counts as unpainted


def test_patch_mask_takes_the_nearest_brush_colour_and_later_layers_win():
    first = _layer(
        (40, 60),
        [
            (slice(0, 10), slice(0, 60), GREEN, 255),
            (slice(10, 20), slice(0, 60), AMBER, 255),
            (slice(20, 30), slice(0, 60), (50, 120, 240), 200),
        ],
    )  # antialiased blue
    second = _layer((40, 60), [(slice(0, 5), slice(0, 10), AMBER, 255)])
    mask = demo.mask_from_layers([first, second], (40, 60), "patch")
    assert (mask[0:5, 0:10] == 0.5).all() and (mask[5:10] == 0).all() and (mask[0:5, 10:] == 0).all()
    assert (mask[10:20] == 0.5).all() and (mask[20:] == 1).all()
    # a binary checkpoint treats every colour as "sharp"
    assert (demo.mask_from_layers([first], (40, 60), "binary")[:30] == 0).all()


def test_layer_on_a_scaled_canvas_is_resized_to_the_photo():
    layer = _layer((20, 30), [(slice(0, 10), slice(0, 15), GREEN, 255)])
    mask = demo.mask_from_layers([layer], (40, 60), "binary")
    assert (mask[:20, :30] == 0).all() and (mask[20:] == 1).all() and (mask[:, 30:] == 1).all()


def test_nothing_painted_or_nothing_sharp_is_a_user_error():
    with pytest.raises(UserError, match="nothing is painted"):
        demo.mask_from_layers([], (8, 8), "binary")
    with pytest.raises(UserError, match="nothing is painted"):
        demo.mask_from_layers([_layer((8, 8), [(slice(0, 8), slice(0, 8), GREEN, 50)])], (8, 8), "binary")
    with pytest.raises(UserError, match="nothing is marked sharp"):
        demo.mask_from_layers([_layer((8, 8), [(slice(0, 4), slice(0, 8), BLUE, 255)])], (8, 8), "patch")


# ----- the Run handler ----------------------------------------------------------------------------------------
def test_process_is_predicts_inference_and_keeps_the_painted_subject(demo_model):
    photo = _photo()
    layer = _layer(photo.shape[:2], [(slice(30, 60), slice(40, 90), GREEN, 255)])
    steps: list[str] = []
    before, after = demo.process(
        demo_model,
        {
            "background": np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)]),
            "layers": [layer],
            "composite": None,
        },
        progress=lambda fraction, desc: steps.append(desc),
    )
    assert (before == photo).all() and after.shape == photo.shape and after.dtype == np.uint8
    assert (after[30:60, 40:90] == photo[30:60, 40:90]).all()  # unchanged under the stroke
    outside = np.abs(after.astype(int) - photo)[:20]
    assert outside.mean() > 10  # noise is blurred elsewhere
    mask = np.ones(photo.shape[:2], np.float32)
    mask[30:60, 40:90] = 0
    assert (after == defocus_array(demo_model.defocuser, photo, mask, demo_model.device, demo_model.max_side)).all()
    _, told = demo.process(demo_model, {"background": photo, "layers": [layer]}, amount=4.0)
    expected = defocus_array(demo_model.defocuser, photo, mask, demo_model.device, demo_model.max_side, amount=4.0)
    assert (told == expected).all() and not (told == after).all()  # the slider's amount, once moved
    assert steps and steps[0] == "reading the photo"


def test_uploaded_mask_file_replaces_the_painting(demo_model, tmp_path):
    photo = _photo()
    grey = np.full(photo.shape[:2], 255, np.uint8)
    grey[:, :40] = 0
    Image.fromarray(grey).save(tmp_path / "mask.png")
    _, after = demo.process(demo_model, {"background": photo, "layers": []}, str(tmp_path / "mask.png"))
    assert (after[:, :40] == photo[:, :40]).all() and np.abs(after[:, 60:].astype(int) - photo[:, 60:]).mean() > 10


@pytest.mark.parametrize(
    "case, message",
    [
        ("no photo", "no photo: upload one"),
        ("nothing painted", "nothing is painted"),
        ("unreadable mask", "mask file mask.png: not a readable image"),
        ("mask of another size", "mask file mask.png is 10x10 but the photo is 128x96"),
        ("empty mask", "mask file mask.png: the mask has no in-focus pixel"),
        ("too large", "the photo is 128x96 = 0.0 MP; this page takes at most 0.001 MP"),
    ],
)
def test_bad_input_is_a_user_error(demo_model, tmp_path, case, message):
    editor = {"background": _photo(), "layers": [_layer((96, 128), [(slice(0, 9), slice(0, 9), GREEN, 255)])]}
    mask_file, model = None, demo_model
    if case == "no photo":
        editor = {"background": None, "layers": []}
    elif case == "nothing painted":
        editor["layers"] = []
    elif case == "too large":
        model = replace(demo_model, max_megapixels=0.001)
    else:
        mask_file = tmp_path / "mask.png"
        if case == "unreadable mask":
            mask_file.write_bytes(b"not a png")
        else:
            other = case == "mask of another size"  # black (all sharp) but 10x10; or all white, nothing sharp
            Image.fromarray(np.full((10, 10) if other else (96, 128), 0 if other else 255, np.uint8)).save(mask_file)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        demo.process(model, editor, str(mask_file) if mask_file else None)


def test_handler_shows_errors_as_messages_and_writes_a_full_size_png(demo_model, tmp_path, monkeypatch):
    import gradio as gr

    handler = demo.make_run_handler(demo_model, tmp_path)
    no_progress = lambda *args, **kwargs: None
    with pytest.raises(gr.Error, match="no photo"):
        handler(None, None, 3.0, False, progress=no_progress)
    photo = _photo()
    (before, out), button = handler(
        {"background": photo, "layers": [_layer((96, 128), [(slice(0, 9), slice(0, 9), GREEN, 255)])]},
        None,
        3.0,
        False,
        progress=no_progress,
    )
    assert Path(out).is_file() and Path(out).suffix == ".png" and Path(out).is_relative_to(tmp_path)
    assert np.asarray(Image.open(out)).shape == photo.shape and (before == photo).all()
    shown = Path(button.value["path"])  # Gradio may serve a copy from its cache
    assert button.visible and shown.name == "defocused.png" and shown.read_bytes() == Path(out).read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(demo, "process", broken)
    with pytest.raises(gr.Error, match=r"unexpected error \(RuntimeError: boom\); details are in the server"):
        handler({"background": photo, "layers": []}, None, 3.0, False, progress=no_progress)


# ----- the amount slider: the model's guess until the user moves it ---------------------------------------------
def test_slider_moves_to_the_guess_and_run_tells_the_model_only_once_moved(demo_model, tmp_path):
    """Whenever the photo or mask changes, the slider takes the model's guess (shown as a number) and counts as not
    moved; Run then gives the model's own output (predict without --amount). Moved, Run tells the model the slider's
    amount. Without a photo or a sharp area the slider stays and the note says what is missing."""
    photo = _photo()
    layer = _layer(photo.shape[:2], [(slice(30, 60), slice(40, 90), GREEN, 255)])
    editor = {"background": photo, "layers": [layer]}
    on_change = demo.make_change_handler(demo_model)
    update, note, moved, preview = on_change(editor, None, False)
    mask = np.ones(photo.shape[:2], np.float32)
    mask[30:60, 40:90] = 0
    guess = demo.guess(demo_model, photo, mask)
    assert update["value"] == pytest.approx(round(guess, 2)) and f"{guess:.2f} %" in note and moved is False
    assert preview.shape == photo.shape and (preview[30:60, 40:90] == photo[30:60, 40:90])[2:-2, 2:-2].all()
    from defocus_lit.models.inference import array_tensors, blur_radius

    image, mask_tensor = array_tensors(photo, mask, demo_model.device)
    radius = blur_radius(demo_model.defocuser, image, mask_tensor, demo_model.max_side)[0, 0].numpy()
    assert guess == pytest.approx(radius[mask > 0].mean() * 100 / 128, rel=1e-4)  # mean out of focus, % of 128 px
    update, note, _, preview = on_change({"background": photo, "layers": []}, None, False)
    assert "value" not in update and "a photo and a sharp area" in note and "value" not in preview
    assert "a photo." in on_change(None, None, False)[1]

    handler = demo.make_run_handler(demo_model, tmp_path)
    no_progress = lambda *args, **kwargs: None
    outs = {}
    for name, amount, was_moved in (("guess", 5.0, False), ("moved", 5.0, True)):
        (_, out), _ = handler(editor, None, amount, was_moved, progress=no_progress)
        outs[name] = np.asarray(Image.open(out))
    device, side = demo_model.device, demo_model.max_side
    assert (outs["guess"] == defocus_array(demo_model.defocuser, photo, mask, device, side)).all()
    assert (outs["moved"] == defocus_array(demo_model.defocuser, photo, mask, device, side, amount=5.0)).all()


# ----- snapping: the sharp strokes select the subject up to its outline ----------------------------------------
RED = (239, 68, 68)  # the "not subject" brush


def _disk_photo() -> tuple[np.ndarray, np.ndarray]:
    """A 96x128 photo: a red-orange disk (the subject) on blue-green noise; and the disk (bool)."""
    rng = np.random.default_rng(5)
    photo = np.stack(
        [rng.integers(0, 60, (96, 128)), rng.integers(90, 200, (96, 128)), rng.integers(120, 255, (96, 128))], 2
    )
    rows, cols = np.mgrid[:96, :128]
    disk = (rows - 48) ** 2 + (cols - 60) ** 2 < 30**2
    photo[disk] = [235, 120, 40]
    return photo.astype(np.uint8), disk


def test_snapping_grows_a_stroke_to_the_subjects_outline():
    """A short sharp stroke inside the disk: painted, only the stroke stays sharp; snapped, the whole disk does (up
    to its rim) and nothing else. The "not subject" brush is never sharp; for a patch checkpoint the far brush
    stays as brushed outside the subject."""
    photo, disk = _disk_photo()
    stroke = _layer(photo.shape[:2], [(slice(44, 52), slice(52, 68), GREEN, 255)])
    painted = demo.mask_from_layers([stroke], photo.shape[:2], "binary")
    assert (painted == 0).sum() == 8 * 16
    snapped = demo.mask_from_layers([stroke], photo.shape[:2], "binary", snap_to=photo)
    rows, cols = np.mgrid[:96, :128]
    rim = np.abs(np.hypot(rows - 48, cols - 60) - 30) < 3  # the outline, where GrabCut may err by a pixel or two
    assert (snapped[disk & ~rim] == 0).all() and (snapped[~disk & ~rim] == 1).all()
    red = _layer(photo.shape[:2], [(slice(0, 10), slice(0, 20), RED, 255)])
    assert (demo.mask_from_layers([stroke, red], photo.shape[:2], "binary")[:10, :20] == 1).all()
    far = _layer(photo.shape[:2], [(slice(85, 96), slice(0, 128), BLUE, 255), (slice(0, 6), slice(0, 128), AMBER, 255)])
    patch = demo.mask_from_layers([stroke, far], photo.shape[:2], "patch", snap_to=photo)
    assert (patch[disk & ~rim] == 0).all() and (patch[0:6] == 0.5).all() and (patch[88:] == 1).all()
    with pytest.raises(UserError, match="nothing is marked sharp"):
        demo.mask_from_layers([red], photo.shape[:2], "binary", snap_to=photo)


def test_run_snaps_when_asked(demo_model, tmp_path):
    photo, disk = _disk_photo()
    editor = {"background": photo, "layers": [_layer(photo.shape[:2], [(slice(44, 52), slice(52, 68), GREEN, 255)])]}
    handler = demo.make_run_handler(demo_model, tmp_path)
    outs = {}
    for snap in (False, True):
        (_, out), _ = handler(editor, None, 3.0, False, snap, progress=lambda *args, **kwargs: None)
        outs[snap] = np.asarray(Image.open(out))
    kept = {snap: (out == photo).all(axis=2) for snap, out in outs.items()}
    rows, cols = np.mgrid[:96, :128]
    inner = np.hypot(rows - 48, cols - 60) < 27  # the disk, less the rim GrabCut may miss by a pixel or two
    assert kept[True][inner].all() and kept[False][inner].mean() < 0.9  # unsnapped, the noise blurs into the disk


def test_run_reuses_the_selection_the_page_showed(demo_model, tmp_path, monkeypatch):
    photo, _ = _disk_photo()
    editor = {"background": photo, "layers": [_layer(photo.shape[:2], [(slice(44, 52), slice(52, 68), GREEN, 255)])]}
    calls = []
    select = demo.select_subject
    monkeypatch.setattr(demo, "_LAST_SELECTION", {})  # earlier tests selected in this photo too
    monkeypatch.setattr(demo, "select_subject", lambda *args: calls.append(1) or select(*args))
    demo.make_change_handler(demo_model)(editor, None, True)
    demo.make_run_handler(demo_model, tmp_path)(editor, None, 3.0, False, True, progress=lambda *a, **k: None)
    assert len(calls) == 1  # the preview's GrabCut, not a second one on Run
    editor["layers"] = [_layer(photo.shape[:2], [(slice(40, 52), slice(52, 68), GREEN, 255)])]
    demo.make_change_handler(demo_model)(editor, None, True)
    assert len(calls) == 2  # another stroke: a new selection
