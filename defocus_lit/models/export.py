"""A checkpoint's `Defocuser` (generator + keep-focus composite) as one file (`defocus-lit export`,
`export_checkpoint`).

Inputs of the exported model: `image` (B,3,H,W) float32 in [-1,1] and `mask` (B,1,H,W) float32 in [0,1]
(0 = keep sharp; 0.5 = partial blur for patch-mask models); output (B,3,H,W) in [-1,1]. H and W must be
multiples of the network's multiple (2**model.num_downs, `ExportResult.multiple`, printed by the command): pad as
`defocus-lit predict` does (reflect the image, mask 1 in the padding) and crop back. The file defocuses
with the amount of blur the model guesses (predict without --amount, strength 1); a given amount and a strength
are `predict`'s and the demo's.

Both files carry METADATA_KEY = JSON {"multiple", "mask_kind", "arch", "keep_focus", "defocus_lit"}: a TorchScript
extra file (`torch.jit.load(F, _extra_files={"defocus_lit.json": ""})`) and an ONNX metadata property.

- torchscript: `torch.jit.trace`, loaded with `torch.jit.load(F)`. The traced graph holds no size constants, so
  any batch size and any H, W that are multiples of the network's multiple run (the generator's own size check is
  not traced: other sizes give wrong shapes or an error inside the convolutions).
- onnx: `torch.onnx.export` (the torch.export-based exporter, opset 18) with dynamic batch and H = multiple * h,
  W = multiple * w for any h, w >= 1, so any multiple runs, e.g. in onnxruntime.

After writing, the file is loaded back and run on a random input of a size other than the one it was traced
at; the export returns the largest difference from the checkpoint's model and fails if it exceeds 1e-3. The file
is written to a temporary name and renamed only after that check passes.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from defocus_lit import __version__
from defocus_lit.errors import UserError
from defocus_lit.io import atomic_path
from defocus_lit.models.checkpoint import Defocuser, load_checkpoint

FORMATS = ("torchscript", "onnx")
TOLERANCE = 1e-3  # [-1,1] scale, 1/8 of a grey level: the runtimes' FFTs differ by ~1e-7, which the spread
# head's normalisation divides by weights down to ~1e-3 (one pixel in a 16-px disk)
ONNX_OPSET = 18
INPUT_NAMES = ("image", "mask")
METADATA_KEY = "defocus_lit.json"
# (batch, H / multiple, W / multiple) of the tracing input and of the check input. torch.export specialises a
# dimension whose example size is 0 or 1, so the traced batch and block counts are 2.
TRACE_SHAPE = (2, 2, 2)
CHECK_SHAPE = (1, 1, 3)


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise UserError(
            f"--format onnx: needs the onnx and onnxscript packages ({err.name} is missing): "
            "pip install defocus_lit[onnx]"
        ) from None


def example_inputs(multiple: int, shape: tuple[int, int, int], *, patch: bool, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random image (B,3,H,W) in [-1,1] and mask (B,1,H,W) for shape = (B, H / multiple, W / multiple); the
    mask takes 0/1 (or 0/0.5/1 for patch models) in random cells of 1/8 multiple, so both sharp and blurred
    regions occur."""
    g = torch.Generator().manual_seed(seed)
    b, h, w = shape[0], multiple * shape[1], multiple * shape[2]
    image = torch.rand(b, 3, h, w, generator=g) * 2 - 1
    levels = torch.tensor([0.0, 0.5, 1.0] if patch else [0.0, 1.0])
    cell = max(multiple // 8, 1)
    cells = torch.randint(len(levels), (b, 1, -(-h // cell), -(-w // cell)), generator=g)
    mask = levels[cells].repeat_interleave(cell, 2).repeat_interleave(cell, 3)[..., :h, :w]
    return image, mask.contiguous()


# ----- exporters: write the model to a path; loaders: a callable on (image, mask) numpy/tensors ------------------
def _export_torchscript(model: Defocuser, inputs: tuple[Tensor, Tensor], path: Path, metadata: str) -> None:
    with warnings.catch_warnings():
        # The generator's H/W check becomes a constant in the trace (TracerWarning); the graph itself has no
        # size constants, which the check after export confirms on another size. jit.trace is deprecated in
        # favour of torch.export, which has no TorchScript output.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, inputs)
    with open(path, "wb") as file:  # a Python file: torch's own file writer aborts the process on a full disk
        torch.jit.save(traced, file, _extra_files={METADATA_KEY: metadata})


def _load_torchscript(path: Path) -> Callable[[Tensor, Tensor], np.ndarray]:
    loaded = torch.jit.load(str(path), map_location="cpu")
    return lambda image, mask: loaded(image, mask).numpy()


def _export_onnx(model: Defocuser, inputs: tuple[Tensor, Tensor], path: Path, metadata: str) -> None:
    from torch.export import Dim

    batch, h, w = Dim("batch", min=1, max=1024), Dim("h", min=1, max=1024), Dim("w", min=1, max=1024)
    m = model.multiple
    axes = {0: batch, 2: m * h, 3: m * w}
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (axis renaming, optional torchvision ops)
        exporter_log.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                model,
                inputs,
                input_names=list(INPUT_NAMES),
                output_names=["output"],
                opset_version=ONNX_OPSET,
                dynamo=True,
                verbose=False,
                dynamic_shapes={"image": axes, "mask": axes},
            )
        finally:
            exporter_log.setLevel(level)
    program.model.metadata_props[METADATA_KEY] = metadata
    program.save(str(path), external_data=False)


def _load_onnx(path: Path) -> Callable[[Tensor, Tensor], np.ndarray]:
    """onnxruntime when installed; else onnx's pure-Python reference evaluator (slow but dependency-free)."""
    import onnx

    onnx.checker.check_model(str(path))
    try:
        import onnxruntime
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(str(path))
        return lambda image, mask: evaluator.run(None, {"image": image.numpy(), "mask": mask.numpy()})[0]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda image, mask: session.run(None, {"image": image.numpy(), "mask": mask.numpy()})[0]


EXPORTERS = {"torchscript": _export_torchscript, "onnx": _export_onnx}
LOADERS = {"torchscript": _load_torchscript, "onnx": _load_onnx}


def max_difference(model: Defocuser, run_exported: Callable[[Tensor, Tensor], np.ndarray], *, patch: bool) -> float:
    """Largest |exported - model| on a random (1,3,m,3m) input: another batch size and H, W than the traced
    (2,3,2m,2m) one."""
    image, mask = example_inputs(model.multiple, CHECK_SHAPE, patch=patch, seed=1)
    with torch.inference_mode():
        difference = run_exported(image, mask) - model(image, mask).numpy()
    return float(np.abs(difference).max())


def export(model: Defocuser, cfg: DictConfig, fmt: str, out: Path) -> float:
    """Export `model` (on the CPU, eval mode; `cfg` its run's config) to `out` in format `fmt`, check it and
    return the max difference.

    The file goes to a temporary name beside `out` and replaces `out` only when the check passes."""
    if fmt not in FORMATS:
        raise UserError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    model = model.cpu().eval()
    patch = cfg.data.mask_kind == "patch"
    metadata = {
        "multiple": model.multiple,
        "mask_kind": cfg.data.mask_kind,
        "arch": cfg.arch,
        "keep_focus": bool(cfg.keep_focus),
        "defocus_lit": __version__,
    }
    with atomic_path(out) as tmp:
        inputs = example_inputs(model.multiple, TRACE_SHAPE, patch=patch)
        EXPORTERS[fmt](model, inputs, tmp, json.dumps(metadata))
        max_diff = max_difference(model, LOADERS[fmt](tmp), patch=patch)
        if not max_diff <= TOLERANCE:
            raise RuntimeError(
                f"{out}: the exported model differs from the checkpoint by {max_diff:.3g} "
                f"(> {TOLERANCE:g}); nothing written"
            )
    return max_diff


@dataclass(frozen=True)
class ExportResult:
    """An exported file, with what its user needs: the sizes it takes (H and W multiples of `multiple`), the
    mask values it was trained on (`mask_kind`) and its largest difference from the checkpoint's model."""

    path: Path
    fmt: str
    arch: str
    multiple: int
    mask_kind: str
    max_diff: float


def export_checkpoint(checkpoint: str | Path, fmt: str, out: str | Path) -> ExportResult:
    """Export the model of a `defocus-lit train` checkpoint to `out` in format `fmt` ("torchscript" or "onnx"),
    checked against the checkpoint as `export` does. UserError for bad input, before anything is loaded when
    it can be."""
    out = Path(out)
    if fmt == "onnx":
        require_onnx()
    if out.is_dir():
        raise UserError(f"{out}: is a folder; --out takes a file name")
    model, cfg = load_checkpoint(checkpoint)
    max_diff = export(model, cfg, fmt, out)
    return ExportResult(out, fmt, cfg.arch, model.multiple, cfg.data.mask_kind, max_diff)
