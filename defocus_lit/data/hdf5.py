"""The HDF5 dataset's layout (what `data build` writes and everything else reads) and its reader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from defocus_lit.data.planes import PLANES
from defocus_lit.errors import UserError

SPLITS = ("train", "val", "test")

# name -> (dtype, trailing shape after (N,H,W)); per-sample datasets have trailing shape None.
LAYOUT: dict[str, tuple[np.dtype, tuple[int, ...] | None]] = {
    "image": (np.dtype(np.uint8), (3,)),
    "target": (np.dtype(np.uint8), (3,)),
    "mask": (np.dtype(np.uint8), ()),
    "patch_mask": (np.dtype(np.uint8), ()),
    "depth_weight": (np.dtype(np.uint8), ()),
    "depth": (np.dtype(np.float16), ()),
    "radius": (np.dtype(np.float16), ()),  # px, the renderer's blur radius of each pixel
    "plane": (np.dtype(np.uint8), None),
    "frame": (np.dtype(np.int32), None),
    "split": (np.dtype(np.uint8), None),
    "mean_radius": (np.dtype(np.float32), None),
    "source": (np.dtype(np.uint8), None),  # index into the `sources` attribute: which source the sample came from
    "kind": (np.dtype(np.uint8), None),  # index into KINDS: how the sample's depth was read (a frame may have both)
}
ADDED = (
    "radius",
    "source",
    "kind",
)  # datasets newer than the first layout: a file without them is from an older version
# Maps that compress well (few levels, smooth; 10-50x) are stored deflated at level 1, which decompresses faster
# than LZF here and is readable by any HDF5 tool; colour stays raw for fast window reads.
COMPRESSED = ("mask", "patch_mask", "depth_weight", "depth", "radius")
REQUIRED_ATTRS = ("source", "sources", "renderer", "planes", "filter_counts", "depth_kind", "version", "split_sizes")


def open_dataset(path: str | os.PathLike) -> h5py.File:
    """Open a file made by `build_dataset` read-only; UserError naming it if missing, not HDF5 or of another
    layout."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such dataset file")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        if "truncated file" in str(err):  # HDF5 finds the file shorter than its header says
            raise UserError(f"{path}: truncated (a copy that did not finish?); copy or build it again") from None
        raise UserError(f"{path}: not an HDF5 file ({err})") from None
    try:
        _check_layout(file, path)
    except BaseException:
        file.close()
        raise
    return file


def _check_layout(file: h5py.File, path: Path) -> None:
    n = hw = None
    for name, (dtype, trailing) in LAYOUT.items():
        ds = file.get(name)
        if not isinstance(ds, h5py.Dataset) and name in ADDED and "image" in file:
            raise UserError(f"{path}: made by an older defocus_lit (no '{name}' dataset); rebuild it with `data build`")
        if not isinstance(ds, h5py.Dataset):
            raise UserError(
                f"{path}: not a defocus_lit dataset (no '{name}' dataset; build one with `defocus-lit data build`)"
            )
        ndim = 1 if trailing is None else 3 + len(trailing)
        if ds.dtype != dtype or ds.ndim != ndim or (trailing and ds.shape[3:] != trailing):
            raise UserError(
                f"{path}: dataset '{name}' has dtype {ds.dtype} shape {ds.shape}; expected {dtype} with {ndim} dims"
            )
        n = ds.shape[0] if n is None else n
        if ds.shape[0] != n or (trailing is not None and hw is not None and ds.shape[1:3] != hw):
            raise UserError(f"{path}: dataset '{name}' shape {ds.shape} disagrees with the others")
        hw = ds.shape[1:3] if trailing is not None else hw
    for key in REQUIRED_ATTRS:
        if key not in file.attrs:
            raise UserError(f"{path}: attribute '{key}' is missing (not a file from `defocus-lit data build`)")
    if n == 0:
        raise UserError(f"{path}: the dataset has no samples")


def _json_attr(file: h5py.File, key: str, path: Path):
    value = file.attrs.get(key)
    if value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        raise UserError(f"{path}: attribute '{key}' is not valid JSON") from None


def read_info(path: str | os.PathLike) -> dict:
    """A JSON-able description of a built dataset: sizes, splits, planes, sources (with their samples per split),
    renderer, filter counts."""
    path = Path(path)
    with open_dataset(path) as file:
        split_arr, plane_arr, frame_arr = file["split"][:], file["plane"][:], file["frame"][:]
        source_arr = file["source"][:]
        n, h, w = file["image"].shape[:3]
        plane_names = _json_attr(file, "plane_names", path) or list(PLANES)
        return {
            "path": str(path),
            "file_bytes": path.stat().st_size,
            "num_samples": int(n),
            "size": [int(h), int(w)],
            "num_frames": int(np.unique(frame_arr).size),
            "source_frames": int(file.attrs.get("num_frames", np.unique(frame_arr).size)),
            "splits": {
                name: {
                    "samples": int((split_arr == code).sum()),
                    "frames": int(np.unique(frame_arr[split_arr == code]).size),
                }
                for code, name in enumerate(SPLITS)
            },
            "planes": {
                name: int((plane_arr == code).sum())
                for code, name in enumerate(plane_names)
                if (plane_arr == code).any()
            },
            "source": _json_attr(file, "source", path),
            "sources": [
                {
                    **part,
                    "samples": {
                        name: int(((source_arr == index) & (split_arr == code)).sum())
                        for code, name in enumerate(SPLITS)
                    },
                }
                for index, part in enumerate(_json_attr(file, "sources", path))
            ],
            "depth_kind": str(file.attrs["depth_kind"]),
            "renderer": _json_attr(file, "renderer", path),
            "filter_counts": _json_attr(file, "filter_counts", path),
            "settings": _json_attr(file, "settings", path),
            "version": str(file.attrs["version"]),
        }


def info_text(info: dict) -> str:
    """The human-readable `data info` report."""
    h, w = info["size"]
    splits = ", ".join(
        f"{name} {s['samples']} samples ({s['frames']} frame{'' if s['frames'] == 1 else 's'})"
        for name, s in info["splits"].items()
    )
    renderer = " ".join(f"{k}={v}" for k, v in (info["renderer"] or {}).items())
    source = dict(info["source"] or {})
    filtered = ", ".join(f"{k} {v}" for k, v in (info["filter_counts"] or {}).items() if v) or "none"
    return "\n".join(
        [
            f"{info['path']}: {info['num_samples']} samples of {h}x{w} from {info['num_frames']} frames "
            f"({info['file_bytes'] / 1e6:.1f} MB, defocus_lit {info['version']})",
            f"splits:   {splits}",
            "planes:   " + ", ".join(f"{k} {v}" for k, v in info["planes"].items()),
            f"source:   {source.pop('source', '?')} {json.dumps(source)} (depth kind: {info['depth_kind']}, "
            f"{info['source_frames']} frames read)",
            *_sources_lines(info["sources"]),
            f"renderer: {renderer}",
            f"filtered: {filtered}",
            f"settings: {json.dumps(info['settings'])}",
        ]
    )


def _sources_lines(sources: list[dict]) -> list[str]:
    """One line per source: its index (the `source` dataset's value), name, path, weight and samples per split."""
    lines = []
    for index, part in enumerate(sources):
        samples = part["samples"]
        splits = ", ".join(f"{name} {count}" for name, count in samples.items())
        path = f" {part['path']}" if part["path"] else ""
        lines.append(
            f"{'sources:' if index == 0 else '':10}{index} {part['name']}{path}: weight {part['weight']:g}, "
            f"{part['frames']} frames read, {sum(samples.values())} samples ({splits})"
        )
    return lines
