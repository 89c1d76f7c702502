"""`defocus-lit export`: a checkpoint's generator as a TorchScript or ONNX file, checked against the checkpoint
(`defocus_lit.models.export`, which describes the file's inputs and metadata)."""

from __future__ import annotations

import argparse

from defocus_lit.models.export import FORMATS, TOLERANCE, export_checkpoint


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint from `defocus-lit train` (.ckpt)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="torchscript (.pt) or onnx (.onnx)")
    parser.add_argument("--out", required=True, help="output file")


def run(args: argparse.Namespace) -> int:
    result = export_checkpoint(args.ckpt, args.format, args.out)
    levels = "0/0.5/1" if result.mask_kind == "patch" else "0/1"
    print(
        f"wrote {result.path} ({result.fmt}, {result.arch}, H and W multiples of {result.multiple}, mask {levels}); "
        f"max |exported - checkpoint| = {result.max_diff:.3g} (tolerance {TOLERANCE:g})"
    )
    return 0
