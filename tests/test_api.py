"""The Python API (`from defocus_lit import ...`): the functions the commands call, on arrays, PIL images, files."""

import numpy as np
import pytest
from PIL import Image

import defocus_lit
from defocus_lit.cli import main
from defocus_lit.errors import UserError


def _photo_and_mask(h: int = 40, w: int = 56) -> tuple[np.ndarray, np.ndarray]:
    photo = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    grey = np.full((h, w), 255, np.uint8)
    grey[10:30, 12:30] = 0  # black: keep sharp
    return photo, grey


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return defocus_lit.load_model(tiny_checkpoint, device="cpu")


def test_the_api_is_exported_from_the_package_on_first_use():
    from defocus_lit import Model, api, build_dataset, evaluate, load_model, subject_mask

    assert (Model, build_dataset, evaluate, load_model, subject_mask) == tuple(
        getattr(api, name) for name in defocus_lit.API
    )

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        defocus_lit.nothing  # noqa: B018


def test_defocus_takes_arrays_pil_images_and_files_alike_and_gives_what_predict_writes(model, tmp_path):
    photo, grey = _photo_and_mask()
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.fromarray(grey).save(tmp_path / "mask.png")
    from_arrays = model.defocus(photo, grey, amount=3)
    assert from_arrays.shape == photo.shape and from_arrays.dtype == np.uint8
    assert (from_arrays[10:30, 12:30] == photo[10:30, 12:30]).all()  # sharp where black
    assert (model.defocus(Image.fromarray(photo), Image.fromarray(grey), amount=3) == from_arrays).all()
    assert (model.defocus(tmp_path / "photo.png", str(tmp_path / "mask.png"), amount=3) == from_arrays).all()
    assert (model.defocus(photo, grey.astype(np.float32) / 255, amount=3) == from_arrays).all()  # floats in [0,1]
    out = tmp_path / "out.png"
    args = ["predict", "--ckpt", str(model.path), "--image", str(tmp_path / "photo.png")]
    assert main([*args, "--mask", str(tmp_path / "mask.png"), "--out", str(out), "--amount", "3"]) == 0
    assert (np.asarray(Image.open(out)) == from_arrays).all()


def test_blur_radius_and_the_guess_match_the_amount_drawn(model):
    photo, grey = _photo_and_mask()
    blurred = grey > 0
    guess = model.guess_amount(photo, grey)
    radius = model.blur_radius(photo, grey)
    assert radius.shape == grey.shape and radius.dtype == np.float32
    assert guess == pytest.approx(radius[blurred].mean() * 100 / 56, rel=1e-4)
    told = model.blur_radius(photo, grey, amount=2 * guess)
    assert told[blurred].mean() * 100 / 56 == pytest.approx(2 * guess, rel=1e-3)  # the tiny run draws it exactly


def test_bad_input_raises_the_commands_messages(model):
    photo, grey = _photo_and_mask()
    with pytest.raises(UserError, match=r"^the 20x20 uint8 array: mask is 20x20 but the image the 40x56x3 uint8"):
        model.defocus(photo, grey[:20, :20])
    with pytest.raises(UserError, match=r"^the 40x56 uint8 array: the mask has no in-focus pixel"):
        model.defocus(photo, np.full_like(grey, 255))
    with pytest.raises(UserError, match=r"^--amount: must be a number > 0"):
        model.defocus(photo, grey, amount=-1)
    with pytest.raises(UserError, match=r"not an image"):
        model.defocus(np.zeros((4, 4, 7), np.uint8), grey)
    with pytest.raises(UserError, match=r"nowhere\.ckpt: no such checkpoint file"):
        defocus_lit.load_model("nowhere.ckpt")


def test_evaluate_gives_the_report_as_a_dict_and_writes_only_when_asked(model, tmp_path):
    data = next((model.path.parent / "data").glob("*.h5"))
    report = model.evaluate(data=data, limit=2)
    assert {"model", "model_told_amount", "mask_blur"} <= set(report["mean"]) and len(report["samples"]) == 2
    assert list(tmp_path.iterdir()) == []
    again = defocus_lit.evaluate(model.path, data=data, limit=2, out=tmp_path / "report", device="cpu")
    assert again["mean"] == report["mean"] and (tmp_path / "report" / "report.json").is_file()


def test_build_dataset_is_the_data_commands_builder():
    from defocus_lit.data.build import build_dataset

    assert defocus_lit.build_dataset is build_dataset
