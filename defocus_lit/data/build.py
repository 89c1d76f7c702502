"""The HDF5 dataset writer: RGB-D frames -> focal planes and masks -> rendered targets -> one HDF5 file.

Every frame gives up to three samples (its fore/mid/back planes); the three targets of a frame are rendered in
one batched renderer call. Samples are written in blocks to a temporary file beside the output, which is renamed
over the output only when complete, so an interrupted or failed build never leaves a half-written dataset.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from defocus_lit import __version__
from defocus_lit.data.planes import (
    PLANES,
    REJECT_REASONS,
    SampleFilter,
    binary_mask,
    depth_grey,
    depth_weight,
    focal_plane,
    focus_band,
    nearness,
    patch_mask,
    valid_depth,
)
from defocus_lit.data.sources import ManifestSource, RGBDFrame, RGBDSource
from defocus_lit.errors import UserError
from defocus_lit.render import RenderSettings, blur_radius_blur_map, blur_radius_thin_lens, render_defocus

SPLITS = ("train", "val", "test")
DEFAULT_SIZE = (256, 256)
FLOAT16_MAX = float(np.finfo(np.float16).max)

# name -> (dtype, trailing shape after (N,H,W)); per-sample datasets have trailing shape None.
LAYOUT: dict[str, tuple[np.dtype, tuple[int, ...] | None]] = {
    "image": (np.dtype(np.uint8), (3,)),
    "target": (np.dtype(np.uint8), (3,)),
    "mask": (np.dtype(np.uint8), ()),
    "patch_mask": (np.dtype(np.uint8), ()),
    "depth_weight": (np.dtype(np.uint8), ()),
    "depth": (np.dtype(np.float16), ()),
    "plane": (np.dtype(np.uint8), None),
    "frame": (np.dtype(np.int32), None),
    "split": (np.dtype(np.uint8), None),
    "mean_radius": (np.dtype(np.float32), None),
}
# Maps that compress well (few levels, smooth; 10-50x) are stored deflated at level 1, which decompresses faster
# than LZF here and is readable by any HDF5 tool; colour stays raw for fast window reads.
COMPRESSED = ("mask", "patch_mask", "depth_weight", "depth")
REQUIRED_ATTRS = ("source", "renderer", "planes", "filter_counts", "depth_kind", "version", "split_sizes")


@dataclass
class _Job:
    """What every frame of a build needs; handed to the worker processes once."""

    source: RGBDSource
    size: tuple[int, int]
    planes: tuple[str, ...]
    settings: RenderSettings
    sample_filter: SampleFilter
    device: str


@dataclass
class _FrameResult:
    """One frame's kept samples, named as the HDF5 datasets (None when every plane was rejected), and the reasons
    its other planes were rejected. `samples`: arrays with a leading sample axis; `shared`: arrays all samples of
    the frame share (the image), sent once; `chunks`: the COMPRESSED datasets, already deflated by the worker, one
    chunk per sample (the frame's depth is one chunk, repeated, and pickled once)."""

    index: int
    kind: str
    split: str | None
    rejected: list[str]
    samples: dict[str, np.ndarray] | None
    shared: dict[str, np.ndarray] | None = None
    chunks: dict[str, list[bytes]] | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """`samples` with the shared arrays repeated along the sample axis."""
        n = len(self.samples["plane"])
        return {**self.samples, **{name: np.broadcast_to(v, (n, *v.shape)) for name, v in self.shared.items()}}


# ----------------------------------------------------------------------------------------------- frame sizes


def fit_frame(image: np.ndarray, depth: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize (short side first, keeping the aspect) and center-crop a frame to `size` (H,W).

    The image is resampled with Lanczos; depth with nearest neighbour so that no depth is invented across
    object edges and 0 (no measurement) stays 0."""
    h, w = depth.shape
    th, tw = size
    if (h, w) == (th, tw):
        return image, depth
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        image = np.array(Image.fromarray(image).resize((nw, nh), Image.Resampling.LANCZOS))
        depth = np.array(Image.fromarray(depth.astype(np.float32)).resize((nw, nh), Image.Resampling.NEAREST))
    top, left = (nh - th) // 2, (nw - tw) // 2
    return image[top : top + th, left : left + tw], depth[top : top + th, left : left + tw]


def _output_size(first: RGBDFrame, source: RGBDSource, size: tuple[int, int] | None) -> tuple[int, int]:
    """`size` when given; else the frames' common size (DEFAULT_SIZE when they differ)."""
    if size is not None:
        return size
    first_size = first.depth.shape[:2]
    return first_size if all(s == first_size for s in _frame_sizes(source)) else DEFAULT_SIZE


def _frame_sizes(source: RGBDSource) -> list[tuple[int, int]]:
    """(H,W) of every frame where that is cheap: a manifest's image headers. Synthetic and NYU frames all have
    one size, so they answer []."""
    if not isinstance(source, ManifestSource):
        return []
    sizes = []
    for row in source.rows:
        with Image.open(row.image) as img:  # reads the header only
            sizes.append((img.height, img.width))
    return sizes


# ------------------------------------------------------------------------------------------------ one frame


def _plane_samples(grey: np.ndarray, valid: np.ndarray, job: _Job, rejected: list[str]) -> list[tuple]:
    """(plane index, plane map, binary mask) of the planes that pass the filter; rejections go to `rejected`."""
    kept = []
    for name in job.planes:
        plane_map = focal_plane(grey, name)
        mask = binary_mask(plane_map)
        reason = job.sample_filter.reject_reason(mask, valid)
        if reason is None:
            kept.append((PLANES.index(name), plane_map, mask))
        else:
            rejected.append(reason)
    return kept


def _render(image: np.ndarray, near: np.ndarray, valid: np.ndarray, plane_maps: np.ndarray, masks: np.ndarray,
            settings: RenderSettings, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Targets (P,H,W,3) uint8 of all P kept planes of a frame in one batched renderer call, and their mean blur
    radius (P,) in px over the blurred (mask 255) pixels. plane_maps (P,H,W) 0..255, masks (P,H,W) 0/255."""
    p = len(masks)
    near_t = torch.from_numpy(near)[None, None].to(device).expand(p, 1, -1, -1)
    if settings.blur_model == "blur_map":
        radius = blur_radius_blur_map(torch.from_numpy(plane_maps)[:, None].to(device), settings.max_radius)
    else:
        band = torch.tensor([focus_band(near, m == 0, valid) for m in masks], dtype=torch.float32, device=device)
        radius = blur_radius_thin_lens(near_t, band, settings.k, settings.max_radius)
    image_t = torch.from_numpy(image).to(device).permute(2, 0, 1).float().div(255).expand(p, -1, -1, -1)
    out = render_defocus(image_t, radius, near_t, layers=settings.layers)
    target = out.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    blurred = torch.from_numpy(masks > 0)[:, None].to(device)
    mean_radius = (radius * blurred).sum((1, 2, 3)) / blurred.sum((1, 2, 3)).clamp(min=1)
    return target, mean_radius.float().cpu().numpy()


def _process(job: _Job, index: int) -> _FrameResult:
    """Read frame `index`, fit it to the output size, make its planes' masks, filter and render them."""
    frame = job.source[index]
    image, depth = fit_frame(frame.image, frame.depth, job.size)
    image = np.ascontiguousarray(image)
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
    valid = valid_depth(depth)
    rejected: list[str] = []
    kept = _plane_samples(depth_grey(depth, frame.kind), valid, job, rejected)
    if not kept:
        return _FrameResult(index, frame.kind, frame.split, rejected, None)
    plane_maps = np.stack([k[1] for k in kept])
    masks = np.stack([k[2] for k in kept])
    target, mean_radius = _render(image, nearness(depth, frame.kind), valid, plane_maps, masks, job.settings,
                                  job.device)
    p = len(kept)
    samples = {"target": target, "plane": np.array([k[0] for k in kept], np.uint8),
               "frame": np.full(p, index, np.int32), "mean_radius": mean_radius.astype(np.float32)}
    depth_chunk = deflate(np.minimum(depth, FLOAT16_MAX).astype(np.float16))
    chunks = {"mask": [deflate(m) for m in masks], "patch_mask": [deflate(patch_mask(m)) for m in plane_maps],
              "depth_weight": [deflate(w) for w in np.rint(depth_weight(plane_maps) * 255).astype(np.uint8)],
              "depth": [depth_chunk] * p}
    return _FrameResult(index, frame.kind, frame.split, rejected, samples, {"image": image}, chunks)


_WORKER_JOB: _Job | None = None


def _init_worker(job: _Job) -> None:
    """Worker process setup: one torch thread (processes, not threads, share the cores: the renderer's many
    small FFTs scale badly over threads), SIGTERM back to the default and SIGINT ignored (the parent stops us)."""
    global _WORKER_JOB
    _WORKER_JOB = job
    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _process_in_worker(index: int) -> _FrameResult:
    return _process(_WORKER_JOB, index)


@contextmanager
def _results(job: _Job, workers: int) -> Iterator[Iterator[_FrameResult]]:
    """Every frame's result in frame order: from `workers` forked processes, or in this process when 0.
    Leaving the context (done, an error, an interrupt) ends the workers at once."""
    n = len(job.source)
    if workers == 0:
        yield (_process(job, i) for i in range(n))
        return
    # fork is quick; a CUDA context does not survive it, so GPU workers start fresh
    fork = job.device == "cpu" and "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if fork else "spawn")
    pool = context.Pool(workers, initializer=_init_worker, initargs=(job,))
    try:
        yield pool.imap(_process_in_worker, range(n))
    finally:
        pool.terminate()
        pool.join()


# ---------------------------------------------------------------------------------------------------- splits


def _split_count(frac: float, n: int) -> int:
    """round(frac * n), but at least one when frac > 0 and there are 3+ frames, so a tiny set still has val/test."""
    count = round(frac * n)
    return max(count, 1) if frac > 0 and n >= 3 else count


def assign_splits(frames: dict[int, str | None], fractions: tuple[float, float, float], seed: int) -> dict[int, int]:
    """Frame index -> split code (0 train, 1 val, 2 test), by frame so a frame's planes never straddle splits.

    Frames carrying the official split keep it ("test" -> test); val is carved out of the official train frames
    (val fraction of them). Otherwise a seeded permutation gives test and val their fractions of the frames."""
    rng = np.random.default_rng(seed)
    order = sorted(frames)
    codes: dict[int, int] = {}
    _, val_frac, test_frac = fractions
    if any(split is not None for split in frames.values()):
        train = [i for i in order if frames[i] != "test"]
        codes.update({i: 2 for i in order if frames[i] == "test"})
        val = set(rng.permutation(train)[: _split_count(val_frac, len(train))].tolist()) if train else set()
        codes.update({i: 1 if i in val else 0 for i in train})
        return codes
    perm = rng.permutation(order).tolist()
    n_test = min(_split_count(test_frac, len(perm)), len(perm) - 1)  # always leave a train frame
    n_val = min(_split_count(val_frac, len(perm)), len(perm) - 1 - n_test)
    for rank, i in enumerate(perm):
        codes[i] = 2 if rank < n_test else 1 if rank < n_test + n_val else 0
    return codes


def _check_split(split: Sequence[float]) -> tuple[float, float, float]:
    train, val, test = (float(x) for x in split)
    if min(val, test) < 0 or val + test >= 1 or abs(train + val + test - 1) > 1e-6:
        raise UserError(f"split: fractions (train, val, test) must be >= 0, sum to 1 and leave train frames; got {split}")
    return train, val, test


# ---------------------------------------------------------------------------------------------------- writer


def deflate(sample: np.ndarray) -> bytes:
    """One sample as the chunk a COMPRESSED dataset stores (HDF5's gzip filter, level 1, is a zlib stream), so
    the workers compress and the writer only copies bytes."""
    return zlib.compress(np.ascontiguousarray(sample).tobytes(), 1)


class _Writer:
    """Appends samples to resizable, one-chunk-per-sample datasets, a block at a time."""

    def __init__(self, file: h5py.File, size: tuple[int, int], block: int):
        self.file, self.block, self.n = file, block, 0
        self.pending: dict[str, list] = {name: [] for name in LAYOUT if name != "split"}
        h, w = size
        for name, (dtype, trailing) in LAYOUT.items():
            if name == "split":
                continue
            shape = (0,) if trailing is None else (0, h, w, *trailing)
            chunks = None if trailing is None else (1, h, w, *trailing)
            extra = {"compression": "gzip", "compression_opts": 1} if name in COMPRESSED else {}
            file.create_dataset(name, shape=shape, maxshape=(None, *shape[1:]), dtype=dtype,
                                chunks=chunks if chunks else (4096,), **extra)

    def pending_count(self) -> int:
        return sum(len(v) for v in self.pending["plane"])

    def add(self, arrays: dict[str, np.ndarray], chunks: dict[str, list[bytes]]) -> None:
        """Arrays with a leading sample axis for the raw datasets, `deflate`d chunks (one per sample) for the
        COMPRESSED ones."""
        for name, value in arrays.items():
            self.pending[name].append(value)
        for name, value in chunks.items():
            self.pending[name].extend(value)
        if self.pending_count() >= self.block:
            self.flush()

    def flush(self) -> None:
        k = self.pending_count()
        if k == 0:
            return
        for name, values in self.pending.items():
            ds = self.file[name]
            ds.resize(self.n + k, axis=0)
            if name in COMPRESSED:
                for i, chunk in enumerate(values):
                    ds.id.write_direct_chunk((self.n + i,) + (0,) * (ds.ndim - 1), chunk)
            else:
                ds[self.n : self.n + k] = np.concatenate(values)
            values.clear()
        self.n += k


# ---------------------------------------------------------------------------------------------------- build


@contextmanager
def _sigterm_raises_interrupt() -> Iterator[None]:
    """During the build, SIGTERM (e.g. a cluster job killed) raises KeyboardInterrupt so the cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def default_workers(device: str) -> int:
    """Worker processes for a build: one per usable core on CPU; 0 (render in this process) on CUDA."""
    if device != "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(cores, 1)


def build_dataset(
    source: RGBDSource,
    out: str | os.PathLike,
    planes: Sequence[str] = PLANES,
    settings: RenderSettings | None = None,
    sample_filter: SampleFilter | None = None,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    progress: bool = True,
    *,
    size: tuple[int, int] | None = None,
    device: str = "cpu",
    workers: int | None = None,
    block: int = 48,
) -> dict:
    """Build the HDF5 dataset at `out` from `source`; returns the summary (samples and frames per split,
    filter counts by reason, timing).

    size: output (H,W) (default: the frames' size if all equal, else 256x256); workers: processes that read
    and render frames (default `default_workers(device)`, 0 = this process); block: samples per HDF5 write.
    Writes `.OUT.PID.tmp` beside `out` and renames it when complete; on any error or interrupt (SIGTERM
    included) the temporary file is removed and `out` is left untouched."""
    settings = settings or RenderSettings()
    sample_filter = sample_filter or SampleFilter()
    split = _check_split(split)
    unknown = [p for p in planes if p not in PLANES]
    if unknown or not planes:
        raise UserError(f"planes: unknown plane(s) {unknown or '(none)'}; valid: {', '.join(PLANES)}")
    if len(source) == 0:
        raise UserError(f"{source.kind_name}: the source has no frames")
    if workers is not None and workers < 0:
        raise UserError(f"workers: must be >= 0, got {workers}")
    workers = min(default_workers(device) if workers is None else workers, len(source))
    out = Path(out)
    start = time.perf_counter()
    with _sigterm_raises_interrupt():
        job = _Job(source, _output_size(source[0], source, size), tuple(planes), settings, sample_filter, device)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            with _results(job, workers) as results, h5py.File(tmp, "w") as file:
                summary = _write(file, job, results, split, seed, progress, block)
                summary["seconds"] = round(time.perf_counter() - start, 2)
                summary["frames_per_s"] = round(len(source) / max(summary["seconds"], 1e-9), 2)
                file.attrs["build_seconds"] = summary["seconds"]
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    summary["path"] = str(out)
    return summary


def _write(file: h5py.File, job: _Job, results: Iterator[_FrameResult], split, seed, progress, block) -> dict:
    writer = _Writer(file, job.size, block)
    counts: Counter = Counter({reason: 0 for reason in REJECT_REASONS})
    frame_splits: dict[int, str | None] = {}
    kinds: set[str] = set()
    bar = tqdm(total=len(job.source), unit="frame", file=sys.stderr, disable=not progress,
               desc=f"building {job.source.kind_name}")
    with bar:
        for result in results:
            kinds.add(result.kind)
            counts.update(result.rejected)
            if result.samples is not None:
                frame_splits[result.index] = result.split
                writer.add(result.arrays(), result.chunks)
            bar.update(1)
            bar.set_postfix(samples=writer.n + writer.pending_count(), refresh=False)
        writer.flush()
    if writer.n == 0:
        raise UserError(f"{job.source.kind_name}: no sample passed the filters (filtered: {dict(counts)}); "
                        "check the depth maps or loosen the filter")
    codes = assign_splits(frame_splits, split, seed)
    split_arr = np.array([codes[i] for i in file["frame"][:]], np.uint8)
    file.create_dataset("split", data=split_arr, chunks=True)
    summary = _summary(file["frame"][:], split_arr, counts, len(job.source), job.size)
    _write_attrs(file, job, counts, kinds, summary, {
        "size": list(job.size), "planes": list(job.planes), "split": list(split), "seed": seed,
        "device": job.device, "filter": asdict(job.sample_filter)})
    return summary


def _summary(frames: np.ndarray, split_arr: np.ndarray, counts: Counter, num_frames: int, size) -> dict:
    return {
        "samples": {name: int((split_arr == code).sum()) for code, name in enumerate(SPLITS)},
        "frames": {name: int(np.unique(frames[split_arr == code]).size) for code, name in enumerate(SPLITS)},
        "filtered": dict(counts),
        "num_samples": int(split_arr.size),
        "num_frames": num_frames,
        "size": list(size),
    }


def _write_attrs(file: h5py.File, job: _Job, counts: Counter, kinds: set[str], summary: dict,
                 build_settings: dict) -> None:
    attrs = file.attrs
    attrs["source"] = json.dumps(job.source.attrs())
    attrs["renderer"] = json.dumps(job.settings.to_dict())
    attrs["planes"] = json.dumps(list(job.planes))
    attrs["plane_names"] = json.dumps(list(PLANES))
    attrs["filter_counts"] = json.dumps(dict(counts))
    attrs["depth_kind"] = kinds.pop() if len(kinds) == 1 else "mixed"
    attrs["version"] = __version__
    attrs["split_sizes"] = json.dumps(summary["samples"])
    attrs["split_frames"] = json.dumps(summary["frames"])
    attrs["num_frames"] = summary["num_frames"]
    attrs["settings"] = json.dumps(build_settings)


def summary_line(summary: dict) -> str:
    """One line: kept samples per split, filtered counts by reason, path."""
    samples = ", ".join(f"{name} {summary['samples'][name]}" for name in SPLITS)
    filtered = ", ".join(f"{k} {v}" for k, v in summary["filtered"].items() if v) or "none"
    return (f"built {summary['path']}: {summary['num_samples']} samples ({samples}) from {summary['num_frames']} "
            f"frames at {summary['size'][0]}x{summary['size'][1]}; filtered: {filtered}; "
            f"{summary['frames_per_s']} frames/s")


# ---------------------------------------------------------------------------------------------------- reading


def open_dataset(path: str | os.PathLike) -> h5py.File:
    """Open a file made by `build_dataset` read-only; UserError naming it if missing, not HDF5 or of another
    layout."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such dataset file")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
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
        if not isinstance(ds, h5py.Dataset):
            raise UserError(f"{path}: not a defocus_lit dataset (no '{name}' dataset; build one with `defocus-lit data build`)")
        ndim = 1 if trailing is None else 3 + len(trailing)
        if ds.dtype != dtype or ds.ndim != ndim or (trailing and ds.shape[3:] != trailing):
            raise UserError(f"{path}: dataset '{name}' has dtype {ds.dtype} shape {ds.shape}; expected {dtype} with {ndim} dims")
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
    """A JSON-able description of a built dataset: sizes, splits, planes, source, renderer, filter counts."""
    path = Path(path)
    with open_dataset(path) as file:
        split_arr, plane_arr, frame_arr = file["split"][:], file["plane"][:], file["frame"][:]
        n, h, w = file["image"].shape[:3]
        plane_names = _json_attr(file, "plane_names", path) or list(PLANES)
        return {
            "path": str(path),
            "file_bytes": path.stat().st_size,
            "num_samples": int(n),
            "size": [int(h), int(w)],
            "num_frames": int(np.unique(frame_arr).size),
            "source_frames": int(file.attrs.get("num_frames", np.unique(frame_arr).size)),
            "splits": {name: {"samples": int((split_arr == code).sum()),
                              "frames": int(np.unique(frame_arr[split_arr == code]).size)}
                       for code, name in enumerate(SPLITS)},
            "planes": {name: int((plane_arr == code).sum()) for code, name in enumerate(plane_names)
                       if (plane_arr == code).any()},
            "source": _json_attr(file, "source", path),
            "depth_kind": str(file.attrs["depth_kind"]),
            "renderer": _json_attr(file, "renderer", path),
            "filter_counts": _json_attr(file, "filter_counts", path),
            "settings": _json_attr(file, "settings", path),
            "version": str(file.attrs["version"]),
        }


def info_text(info: dict) -> str:
    """The human-readable `data info` report."""
    h, w = info["size"]
    splits = ", ".join(f"{name} {s['samples']} samples ({s['frames']} frame{'' if s['frames'] == 1 else 's'})"
                       for name, s in info["splits"].items())
    renderer = " ".join(f"{k}={v}" for k, v in (info["renderer"] or {}).items())
    source = dict(info["source"] or {})
    filtered = ", ".join(f"{k} {v}" for k, v in (info["filter_counts"] or {}).items() if v) or "none"
    return "\n".join([
        f"{info['path']}: {info['num_samples']} samples of {h}x{w} from {info['num_frames']} frames "
        f"({info['file_bytes'] / 1e6:.1f} MB, defocus_lit {info['version']})",
        f"splits:   {splits}",
        "planes:   " + ", ".join(f"{k} {v}" for k, v in info["planes"].items()),
        f"source:   {source.pop('source', '?')} {json.dumps(source)} (depth kind: {info['depth_kind']}, "
        f"{info['source_frames']} frames read)",
        f"renderer: {renderer}",
        f"filtered: {filtered}",
        f"settings: {json.dumps(info['settings'])}",
    ])
