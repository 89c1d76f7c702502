"""`defocus-lit export`: TorchScript and ONNX files that match the checkpoint, at other sizes than traced."""

import json
import sys
from pathlib import Path

import pytest
import torch

from defocus_lit.cli import main
from defocus_lit.models.checkpoint import load_checkpoint
from defocus_lit.models.export import example_inputs

TOLERANCE = 1e-3


def reference(ckpt: Path, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random input of (batch, H/multiple, W/multiple) and the checkpoint's output for it."""
    model, _ = load_checkpoint(ckpt)
    image, mask = example_inputs(model.multiple, shape, patch=False, seed=7)
    with torch.inference_mode():
        return image, mask, model(image, mask)


def test_torchscript_matches_checkpoint(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "defocuser.pt"
    assert main(["export", "--ckpt", str(tiny_checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    assert "max |exported - checkpoint|" in capsys.readouterr().out
    image, mask, expected = reference(tiny_checkpoint, (3, 1, 5))
    extra = {"defocus_lit.json": ""}
    with torch.inference_mode():
        got = torch.jit.load(str(out), _extra_files=extra)(image, mask)
    assert json.loads(extra["defocus_lit.json"])["multiple"] == 8
    assert (got - expected).abs().max() <= TOLERANCE
    assert [p.name for p in tmp_path.iterdir()] == ["defocuser.pt"]


def test_onnx_is_valid_and_matches_with_dynamic_size(tiny_checkpoint, tmp_path):
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "defocuser.onnx"
    assert main(["export", "--ckpt", str(tiny_checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    onnx.checker.check_model(str(out))
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(metadata["defocus_lit.json"]) | {"defocus_lit": None} == {
        "multiple": 8,
        "mask_kind": "binary",
        "arch": "pix2pix_4ch",
        "keep_focus": True,
        "defocus_lit": None,
    }
    ort = pytest.importorskip("onnxruntime")
    image, mask, expected = reference(tiny_checkpoint, (3, 5, 1))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": image.numpy(), "mask": mask.numpy()})[0]
    assert abs(got - expected.numpy()).max() <= TOLERANCE


def test_truncated_checkpoint_writes_nothing(tiny_checkpoint, tmp_path, capsys):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[: tiny_checkpoint.stat().st_size // 2])
    out = tmp_path / "defocuser.pt"
    assert main(["export", "--ckpt", str(truncated), "--format", "torchscript", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "truncated.ckpt" in err and len(err.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["truncated.ckpt"]


def test_onnx_without_the_extra_says_how_to_install(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    assert main(["export", "--ckpt", str(tiny_checkpoint), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install defocus_lit[onnx]" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
