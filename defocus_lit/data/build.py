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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from defocus_lit import __version__
from defocus_lit.data.frames import KINDS, RGBDFrame, RGBDSource
from defocus_lit.data.hdf5 import COMPRESSED, LAYOUT, SPLITS
from defocus_lit.data.planes import PAPER_PLANES, PLANES, REJECT_REASONS, SampleFilter, depth_weight, patch_mask
from defocus_lit.data.samples import FrameSamples, as_disparity, clean_depth, fit_frame, frame_samples
from defocus_lit.data.sources import ManifestSource, MixedSource
from defocus_lit.errors import UserError
from defocus_lit.io import WriteErrorsKept, atomic_path, keeping_write_errors
from defocus_lit.render import RenderSettings

DEFAULT_SIZE = (256, 256)
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass
class _Job:
    """What every frame of a build needs; handed to the worker processes once."""

    source: RGBDSource
    size: tuple[int, int]
    planes: tuple[str, ...]
    settings: RenderSettings
    sample_filter: SampleFilter
    device: str
    seed: int  # with the frame index, seeds the frame's random focal plane


@dataclass
class _FrameResult:
    """One frame's kept samples, named as the HDF5 datasets (None when every plane was rejected), and the reasons
    its other planes were rejected. `samples`: arrays with a leading sample axis; `shared`: arrays all samples of
    the frame share (the image), sent once; `chunks`: the COMPRESSED datasets, already deflated by the worker, one
    chunk per sample (the frame's depth is one chunk, repeated, and pickled once)."""

    index: int
    source: int  # the index of the frame's source within a mix (`RGBDSource.locate`), else 0
    kinds: tuple[str, ...]  # how its depth was read: its kind, and "disparity" too for `RGBDFrame.also_disparity`
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


def _output_size(first: RGBDFrame, source: RGBDSource, size: tuple[int, int] | None) -> tuple[int, int]:
    """`size` when given; else the frames' common size (DEFAULT_SIZE when they differ, and for a mix)."""
    if size is not None:
        return size
    if isinstance(source, MixedSource):
        return DEFAULT_SIZE
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


def _process(job: _Job, index: int) -> _FrameResult:
    """Read frame `index`, fit it to the output size and make its samples (`frame_samples`; a second set from its
    depth read as disparity for a frame with `also_disparity`: the same frame, so both sets share its split)."""
    frame = job.source[index]
    origin = job.source.locate(index)[0]
    image, depth = fit_frame(frame.image, frame.depth, job.size)
    image, depth = np.ascontiguousarray(image), clean_depth(depth)
    rng = np.random.default_rng([job.seed, index])
    readings = [(depth, frame.kind)] + ([(as_disparity(depth), "disparity")] if frame.also_disparity else [])
    kinds = tuple(kind for _, kind in readings)
    made = [
        frame_samples(image, d, kind, job.planes, job.settings, job.sample_filter, job.device, rng)
        for d, kind in readings
    ]
    rejected = [reason for _, reasons in made for reason in reasons]
    kept = [(samples, kind) for (samples, _), kind in zip(made, kinds) if samples is not None]
    if not kept:
        return _FrameResult(index, origin, kinds, frame.split, rejected, None)
    samples = FrameSamples.concat([s for s, _ in kept])
    p = len(samples.plane)
    arrays = {
        "kind": np.concatenate([np.full(len(s.plane), KINDS.index(kind), np.uint8) for s, kind in kept]),
        "target": samples.target,
        "plane": samples.plane,
        "frame": np.full(p, index, np.int32),
        "mean_radius": samples.mean_radius.astype(np.float32),
        "source": np.full(p, origin, np.uint8),
    }
    depth_chunk = deflate(np.minimum(depth, FLOAT16_MAX).astype(np.float16))
    weights = np.rint(depth_weight(samples.plane_map) * 255).astype(np.uint8)
    chunks = {
        "mask": [deflate(m) for m in samples.mask],
        "patch_mask": [deflate(patch_mask(m)) for m in samples.plane_map],
        "depth_weight": [deflate(w) for w in weights],
        "depth": [depth_chunk] * p,
        "radius": [deflate(r.astype(np.float16)) for r in samples.radius],
    }
    return _FrameResult(index, origin, kinds, frame.split, rejected, arrays, {"image": image}, chunks)


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
        raise UserError(
            f"split: fractions (train, val, test) must be >= 0, sum to 1 and leave train frames; got {split}"
        )
    return train, val, test


# ---------------------------------------------------------------------------------------------------- writer


def deflate(sample: np.ndarray) -> bytes:
    """One sample as the chunk a COMPRESSED dataset stores (HDF5's gzip filter, level 1, is a zlib stream), so
    the workers compress and the writer only copies bytes."""
    return zlib.compress(np.ascontiguousarray(sample).tobytes(), 1)


class _Writer:
    """Appends samples to resizable, one-chunk-per-sample datasets, a block at a time. `raw` is the file HDF5 writes
    through: a block that did not fit on the disk stops the build (`WriteErrorsKept`)."""

    def __init__(self, file: h5py.File, size: tuple[int, int], block: int, raw: WriteErrorsKept):
        self.file, self.block, self.n, self.raw = file, block, 0, raw
        self.pending: dict[str, list] = {name: [] for name in LAYOUT if name != "split"}
        h, w = size
        for name, (dtype, trailing) in LAYOUT.items():
            if name == "split":
                continue
            shape = (0,) if trailing is None else (0, h, w, *trailing)
            chunks = None if trailing is None else (1, h, w, *trailing)
            extra = {"compression": "gzip", "compression_opts": 1} if name in COMPRESSED else {}
            file.create_dataset(
                name,
                shape=shape,
                maxshape=(None, *shape[1:]),
                dtype=dtype,
                chunks=chunks if chunks else (4096,),
                **extra,
            )

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
        self.raw.check()


# ---------------------------------------------------------------------------------------------------- build


class _Interrupts:
    """SIGTERM (a cluster job stopped) and SIGINT (Ctrl-C) during a build: KeyboardInterrupt, so the cleanup runs.

    Raised at once while the build waits for or renders a frame (`frames`); while it writes, only recorded and
    raised after (`check`): HDF5 calls back into Python to write the file (`WriteErrorsKept`), and an exception in
    there would leave it to crash when the file is closed. The record is checked before every frame too, as an
    exception raised while Python runs a weakref or `__del__` callback is printed and dropped ("Exception ignored
    in ...")."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.waiting = False

    def handler(self, signum: int, frame: object) -> None:  # noqa: ARG002
        self.stop.set()
        if self.waiting:
            raise KeyboardInterrupt

    def check(self) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt

    def frames(self, results: Iterator[_FrameResult]) -> Iterator[_FrameResult]:
        """`results`, a signal raising KeyboardInterrupt at once while the next one is awaited."""
        while True:
            self.check()
            self.waiting = True
            try:
                result = next(results)
            except StopIteration:
                return
            finally:
                self.waiting = False
            yield result


@contextmanager
def _interrupts() -> Iterator[_Interrupts]:
    """`_Interrupts` handling SIGTERM and SIGINT for the block (in the main thread: signals go to no other)."""
    interrupts = _Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield interrupts
        return
    previous = {signum: signal.signal(signum, interrupts.handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield interrupts
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def default_workers(device: str) -> int:
    """Worker processes for a build: one per usable core on CPU; 0 (render in this process) on CUDA."""
    if device != "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(cores, 1)


def build_dataset(
    source: RGBDSource,
    out: str | os.PathLike,
    planes: Sequence[str] = PAPER_PLANES,
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
    Writes `.OUT.HOST.PID.tmp` beside `out` and renames it when complete; on any error or interrupt (SIGTERM
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
    with _interrupts() as interrupts:
        job = _Job(source, _output_size(source[0], source, size), tuple(planes), settings, sample_filter, device, seed)
        with atomic_path(out) as tmp:
            with _results(job, workers) as results, keeping_write_errors(tmp) as raw, h5py.File(raw, "w") as file:
                writer = _Writer(file, job.size, block, raw)
                summary = _write(file, job, interrupts.frames(results), split, seed, progress, writer)
                summary["seconds"] = round(time.perf_counter() - start, 2)
                summary["frames_per_s"] = round(len(source) / max(summary["seconds"], 1e-9), 2)
                file.attrs["build_seconds"] = summary["seconds"]
            interrupts.check()  # a signal while HDF5 finished the file
    summary["path"] = str(out)
    return summary


def _write(
    file: h5py.File,
    job: _Job,
    results: Iterator[_FrameResult],
    split,
    seed,
    progress,
    writer: _Writer,
) -> dict:
    counts: Counter = Counter({reason: 0 for reason in REJECT_REASONS})
    frame_splits: dict[int, str | None] = {}
    frame_sources: dict[int, int] = {}
    kinds: set[str] = set()
    bar = tqdm(
        total=len(job.source),
        unit="frame",
        file=sys.stderr,
        disable=not progress,
        desc=f"building {job.source.kind_name}",
    )
    with bar:
        for result in results:
            kinds.update(result.kinds)
            counts.update(result.rejected)
            if result.samples is not None:
                frame_splits[result.index] = result.split
                frame_sources[result.index] = result.source
                writer.add(result.arrays(), result.chunks)
            bar.update(1)
            bar.set_postfix(samples=writer.n + writer.pending_count(), refresh=False)
        writer.flush()
    if writer.n == 0:
        raise UserError(
            f"{job.source.kind_name}: no sample passed the filters (filtered: {dict(counts)}); "
            "check the depth maps or loosen the filter"
        )
    codes: dict[int, int] = {}
    for origin in sorted(set(frame_sources.values())):  # each source gets its own shares, as if built alone
        frames = {i: name for i, name in frame_splits.items() if frame_sources[i] == origin}
        codes.update(assign_splits(frames, split, seed))
    split_arr = np.array([codes[i] for i in file["frame"][:]], np.uint8)
    file.create_dataset("split", data=split_arr, chunks=True)
    summary = _summary(file["frame"][:], split_arr, counts, len(job.source), job.size)
    _write_attrs(
        file,
        job,
        counts,
        kinds,
        summary,
        {
            "size": list(job.size),
            "planes": list(job.planes),
            "split": list(split),
            "seed": seed,
            "device": job.device,
            "filter": asdict(job.sample_filter),
        },
    )
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


def _write_attrs(
    file: h5py.File, job: _Job, counts: Counter, kinds: set[str], summary: dict, build_settings: dict
) -> None:
    attrs = file.attrs
    attrs["source"] = json.dumps(job.source.attrs())
    attrs["sources"] = json.dumps(job.source.parts())
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
    return (
        f"built {summary['path']}: {summary['num_samples']} samples ({samples}) from {summary['num_frames']} "
        f"frames at {summary['size'][0]}x{summary['size'][1]}; filtered: {filtered}; "
        f"{summary['frames_per_s']} frames/s"
    )
