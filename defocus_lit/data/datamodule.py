"""The LightningDataModule that serves batches from a dataset built by `defocus-lit data build`.

Reading: each worker opens the HDF5 file on its first sample (h5py handles do not survive fork/pickle) and reads
only the crop window of every map. Augmentation: one albumentations Compose moves image, target and every mask
together (flip) and applies the same photometric jitter to image and target. Randomness: the train sampler pairs
each index with a seed drawn from a seeded generator, and a sample's crop, flip and jitter come from that seed
alone, so a run depends on `seed` only, not on the number of workers. Batches: float as in the spec, made in the
workers; under a Trainer on a GPU they travel as uint8 and become float on the device (on_after_batch_transfer).
The amount of blur: every sample carries the amount its target has (`amount`, the mean blur radius out of focus in
px), which the generator is told (`amount_told`) but for a share of the training samples (`unknown_amount`, drawn
from the sample's seed): those it is told "unknown", so it also learns to guess the amount. Blur strengths
(`strength_range`): a told training sample's target is rendered again in the worker, on the CPU, from the frame's
stored image and depth with the thin-lens k times a strength drawn from the sample's seed, and its amount is the new
target's.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import albumentations as A
import h5py
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, get_worker_info

from defocus_lit.data.frames import KINDS
from defocus_lit.data.hdf5 import SPLITS, open_dataset
from defocus_lit.data.planes import MASK_KINDS, PLANES, check_patch_split, patch_mask
from defocus_lit.data.samples import as_disparity, frame_maps, mean_radius
from defocus_lit.errors import UserError
from defocus_lit.render import RenderSettings, check_strength_range, render_uint8

READ = ("image", "target", "mask", "patch_mask", "depth_weight", "depth", "radius")  # the HDF5 datasets a sample reads
# How the single-channel maps of a sample are padded (as blurred, not in focus, not valid); colour is reflected.
PAD_FILL = {"mask": 255, "patch": 255, "alt_mask": 255, "weight": 0, "valid": 0, "radius": 0}
COLOUR, UNIT = (1 / 127.5, -1.0), (1 / 255, 0.0)
# uint8 batch map -> (scale, offset) to its float value
FLOAT_SCALE = {
    "image": COLOUR,
    "target": COLOUR,
    "alt_target": COLOUR,
    "mask": UNIT,
    "alt_mask": UNIT,
    "depth_weight": UNIT,
    "focus": (1.0, 0.0),
    "valid": (1.0, 0.0),
}


def seed_worker(worker_id: int) -> None:  # noqa: ARG001
    """DataLoader worker_init_fn: seed numpy and `random` from the worker's torch seed (itself derived from the
    loader's seeded generator) for any library that draws from them. The worker ignores SIGUSR1: Slurm's warning
    signal reaches every process of the job, and a worker forked from a training process would otherwise run that
    process's handler, Lightning's auto-requeue (a checkpoint of the worker's stale copy, a second requeue)."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class SeededSampler(Sampler):
    """A shuffling sampler that yields (position, augmentation seed) pairs drawn from a generator seeded with
    (seed, epoch), so every epoch's order and every sample's augmentation are reproducible whatever the number of
    workers, and a resumed run repeats the same epochs. Lightning calls `set_epoch`; iterating by hand moves on
    one epoch per pass.

    `weights` (one per position, e.g. its source's weight in a mix): an epoch draws `size` positions with
    replacement, each with probability proportional to its weight. Without them, or when they are all equal, an
    epoch is a permutation (every position once), the same as before weights existed."""

    def __init__(self, size: int, seed: int, weights: np.ndarray | None = None):
        self.size, self.seed, self.epoch = size, seed, 0
        equal = weights is None or np.unique(weights).size <= 1
        self.probabilities = None if equal else np.asarray(weights, np.float64) / np.sum(weights)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = (
            rng.permutation(self.size)
            if self.probabilities is None
            else rng.choice(self.size, self.size, p=self.probabilities)
        ).tolist()
        seeds = rng.integers(0, 2**63 - 1, self.size).tolist()
        return iter(zip(order, seeds))


class EvenShares(DistributedSampler):
    """Evaluation shares for `num_replicas` processes: rank r scores positions r, r + n, r + 2n, ... (each sample
    exactly once over all ranks). The shares are evened out, as DDP needs every process to run as many steps (a
    collective call per step, e.g. buffer broadcasts, would otherwise wait forever), with ghost items that the
    dataset serves without a valid pixel, so no metric counts them. Yields (position, is_ghost)."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        mine = range(self.rank, len(self.dataset), self.num_replicas)
        yield from ((position, False) for position in mine)
        yield from ((0, True) for _ in range(len(self) - len(mine)))


def _photometric() -> list[A.BasicTransform]:
    """Mild colour jitter; brightness by max (not by the image mean) so image and target get identical changes."""
    return [
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, brightness_by_max=True, p=0.5),
        A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=10, val_shift_limit=0, p=0.3),
    ]


def _pad(maps: dict[str, np.ndarray], height: int, width: int) -> dict[str, np.ndarray]:
    """Pad every map at the bottom/right to (height, width): colour by reflection, masks as blurred, valid as 0."""
    h, w = maps["mask"].shape[:2]
    if (h, w) == (height, width):
        return maps
    out = {}
    for key, value in maps.items():
        pad = ((0, height - h), (0, width - w)) + ((0, 0),) * (value.ndim - 2)
        if key in PAD_FILL:
            out[key] = np.pad(value, pad, mode="constant", constant_values=PAD_FILL[key])
        else:
            out[key] = np.pad(value, pad, mode="reflect" if min(h, w) > 1 else "edge")
    return out


def _rendering(path: str) -> tuple[RenderSettings, np.ndarray]:
    """What rendering the samples of a built file again takes: the renderer settings it was built with (thin_lens
    only: the blur_map model has no k to scale) and, per sample, (N,) bool whether its nearness was read from its
    stored depth as it is, else from `as_disparity` of it.

    The file stores a frame's depth as its source gave it, and a sample of kind "disparity" from a source of metric
    depth is that depth read as disparity a second time (`RGBDFrame.also_disparity`, the synthetic outdoor scenes).
    The file records no kind per frame, but a manifest records the kinds of its rows: a source is taken to give
    disparity exactly when its recorded `kinds` hold it."""
    with open_dataset(path) as f:
        settings = RenderSettings(**json.loads(f.attrs["renderer"]))
        if settings.blur_model != "thin_lens":
            raise UserError(
                f"data.strength_range: needs a dataset rendered with the thin_lens blur model; {path} uses "
                f"{settings.blur_model}"
            )
        recorded = json.loads(f.attrs["source"])
        parts = recorded.get("parts") or [recorded]
        gives_disparity = np.array(["disparity" in part.get("kinds", ()) for part in parts])
        return settings, (f["kind"][:] == KINDS.index("depth")) | gives_disparity[f["source"][:]]


def _split_patch(
    patch: np.ndarray, weight: np.ndarray, rng: np.random.Generator, split: tuple[float, float]
) -> np.ndarray:
    """The 3-level mask (H,W) uint8 with its blurred pixels split again between partial and full blur at a plane
    level drawn uniformly in `split` (`patch_mask` splits at 150); the in-focus pixels stay as they are. A painted
    mask's line between the two levels follows no depth threshold: the model should not read a step in blur there."""
    line = patch_mask(255 - weight.astype(np.float32), (0, rng.uniform(*split)))
    return np.where(patch == 0, 0, line).astype(np.uint8)


class DefocusDataset(Dataset):
    """The samples `indices` of a built HDF5 file, as numpy uint8 maps (H,W[,3]) for `collate`.

    train: a random `crop_size` window (read alone from the file), horizontal flip and photometric jitter;
    a frame smaller than the crop is padded; a share `unknown_amount` of the samples (drawn from the sample's seed)
    is told no amount (`amount_told` False). With `strength_range` (lo, hi), each told training sample's target (and
    radius, mean_radius) is rendered again at a blur strength drawn log-uniformly from that range (`_rendered`).
    With `patch_split` (lo, hi), a training patch mask's blurred pixels are split again between partial and full blur
    at a plane level drawn from the sample's seed in that range (`_split_patch`).
    Otherwise: the full frame padded to a multiple of `pad_multiple`, with the opposite plane of the same frame
    (fore <-> back) as `alt_*` where the file has it. Every sample carries its `amount`: the mean blur radius (px) of
    its target over its blurred pixels (of the crop, for a crop), or nan for "unknown".
    Picklable: the h5py handle is opened lazily in the process that reads.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        indices: np.ndarray,
        meta: dict[str, np.ndarray],
        *,
        train: bool,
        crop_size: int | None,
        mask_kind: str,
        pad_multiple: int,
        photometric: bool,
        radius: bool = False,
        strength_range: tuple[float, float] | None = None,
        unknown_amount: float = 0.0,
        patch_split: tuple[float, float] | None = None,
    ):
        self.path = str(path)
        self.unknown_amount = unknown_amount
        self.patch_split = patch_split
        self.radius = radius  # read the per-pixel blur radius (a third of a sample's read time) only when asked
        self.strength_range = strength_range
        self.settings, self.as_stored = (None, None) if strength_range is None else _rendering(self.path)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.plane, self.frame, self.kind, self.mean_radius = (
            meta[k] for k in ("plane", "frame", "kind", "mean_radius")
        )
        self.train, self.crop_size, self.mask_kind, self.pad_multiple = train, crop_size, mask_kind, pad_multiple
        self.alt = None if train else self._alt_indices()
        transforms = [A.HorizontalFlip(p=0.5), *(_photometric() if photometric else [])]
        self.transform = (
            A.Compose(
                transforms,
                strict=True,
                additional_targets={
                    "target": "image",
                    "patch": "mask",
                    "weight": "mask",
                    "valid": "mask",
                    "radius": "mask",
                },
            )
            if train
            else None
        )
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._ds: dict[str, h5py.Dataset] | None = None

    def _alt_indices(self) -> np.ndarray:
        """For each sample, the file index of its frame's opposite plane (fore <-> back) with the depth read the same
        way (`kind`), in this split, else -1."""
        fore, back = PLANES.index("fore"), PLANES.index("back")
        opposite = {fore: back, back: fore}

        def key(i: int, plane: int) -> tuple[int, int, int]:
            return int(self.frame[i]), int(self.kind[i]), plane

        lookup = {key(i, int(self.plane[i])): int(i) for i in self.indices}
        return np.array(
            [lookup.get(key(i, opposite.get(int(self.plane[i]), -1)), -1) for i in self.indices], dtype=np.int64
        )

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None, "_ds": None}

    def __len__(self) -> int:
        return len(self.indices)

    def _datasets(self) -> dict[str, h5py.Dataset]:
        """The file's datasets by name, opened once per process (a lookup by name costs as much as a read)."""
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            self._ds = {name: self._file[name] for name in READ}
        return self._ds

    def _read(
        self, index: int, rows: slice, cols: slice, *, rendered: bool = False, radius: bool = False
    ) -> dict[str, np.ndarray]:
        """The maps of sample `index` in the window (rows, cols), named as `collate` takes them; the blur radius
        where the dataset serves it or `radius` asks. rendered: for a target rendered again (`_rendered`): the depth
        (H,W) float32 instead of the stored target and radius."""
        ds = self._datasets()
        depth = ds["depth"][index, rows, cols]
        maps = {
            "image": ds["image"][index, rows, cols],
            "mask": ds["mask"][index, rows, cols],
            "weight": ds["depth_weight"][index, rows, cols],
            "valid": (depth != 0).view(np.uint8),
        }
        if rendered:
            maps["depth"] = depth.astype(np.float32)
        else:
            maps["target"] = ds["target"][index, rows, cols]
            if self.radius or radius:
                maps["radius"] = ds["radius"][index, rows, cols].astype(np.float32)
        if self.mask_kind == "patch":
            maps["patch"] = ds["patch_mask"][index, rows, cols]
        return maps

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        """item: a position, or (position, augmentation seed) for training; for evaluation (position, ghost): a
        ghost (see `EvenShares`) is the sample with no valid pixel, which no metric counts."""
        position, extra = item if isinstance(item, tuple) else (item, 0)
        index = int(self.indices[position])
        if self.train:
            sample = self._train_maps(index, extra)
        else:
            sample = self._eval_maps(position, index)
            if extra:
                sample["valid"] = np.zeros_like(sample["valid"])
                sample["has_alt"] = False
        stored = {
            "plane": int(self.plane[index]),
            "frame": int(self.frame[index]),
            "kind": int(self.kind[index]),
            "mean_radius": float(self.mean_radius[index]),
            "amount": float(self.mean_radius[index]),
            "amount_told": True,
            "strength": 1.0,
        }
        return {**stored, **sample}  # a training sample brings its own amount (a rendered one its strength too)

    def _train_maps(self, index: int, seed: int) -> dict:
        h, w = self._datasets()["mask"].shape[1:3]
        ch, cw = (h, w) if self.crop_size is None else (min(self.crop_size, h), min(self.crop_size, w))
        rng = np.random.default_rng(seed)
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        rows, cols = slice(top, top + ch), slice(left, left + cw)
        # generators of their own: the crop, flip and jitter drawn from `seed` stay what they are without amounts
        told = np.random.default_rng([seed, 2]).random() >= self.unknown_amount
        cropped = (ch, cw) != (h, w)  # a crop's amount is its own: read from its blur radius
        if self.strength_range is None or not told:
            maps, values = (
                self._read(index, rows, cols, radius=cropped),
                {"mean_radius": float(self.mean_radius[index])},
            )
        else:
            frame, values = self._rendered(index, seed, serve_radius=cropped)
            maps = {key: value[rows, cols] for key, value in frame.items()}
        if cropped:
            radius = maps["radius"] if self.radius else maps.pop("radius")
            values["amount"] = float(mean_radius(torch.from_numpy(radius)[None, None], (maps["mask"] > 0)[None])[0])
        else:
            values["amount"] = values["mean_radius"]
        values["amount_told"] = bool(told)
        if self.patch_split is not None and "patch" in maps:
            maps["patch"] = _split_patch(
                maps["patch"], maps["weight"], np.random.default_rng([seed, 3]), self.patch_split
            )
        self.transform.set_random_seed(seed)
        maps = self.transform(**maps)
        return {**(_pad(maps, self.crop_size, self.crop_size) if self.crop_size else maps), **values}

    def _rendered(
        self, index: int, seed: int, serve_radius: bool = False
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The whole frame's maps of sample `index` (`_read`) with its target (H,W,3) uint8, and radius (H,W) float32
        px where the dataset serves it or `serve_radius` asks, rendered again at a strength s drawn log-uniformly from
        the sample's augmentation `seed`; and {"strength": s, "mean_radius": the new radius's mean over the blurred
        pixels}.

        Rendered as `frame_samples` renders it: the file's thin-lens settings with k times s, the in-focus band from
        the stored mask, over the whole frame (the blur reaches across a crop's edges)."""
        lo, hi = self.strength_range
        # rounded to float32, as the batch carries it
        strength = float(np.float32(np.exp(np.random.default_rng([seed, 1]).uniform(np.log(lo), np.log(hi)))))
        everything = slice(None)
        maps = self._read(index, everything, everything, rendered=True)
        depth = maps.pop("depth")
        settings = replace(self.settings, k=self.settings.k * strength)
        reading = depth if self.as_stored[index] else as_disparity(depth)
        near, radius = frame_maps(reading, KINDS[self.kind[index]], settings, in_focus=maps["mask"] == 0)
        maps["target"] = render_uint8(maps["image"][None], near[None], radius[None], settings.layers)[0]
        if self.radius or serve_radius:
            maps["radius"] = radius
        mean = mean_radius(torch.from_numpy(radius)[None, None], (maps["mask"] > 0)[None])[0]
        return maps, {"strength": strength, "mean_radius": float(mean)}

    def _eval_maps(self, position: int, index: int) -> dict:
        everything = slice(None)
        maps = self._read(index, everything, everything)
        alt = int(self.alt[position])
        if alt >= 0:
            other = self._read(alt, everything, everything)
            maps["alt_target"] = other["target"]
            maps["alt_mask"] = other["patch" if self.mask_kind == "patch" else "mask"]
        else:  # no opposite plane: repeat the sample's own maps, flagged by has_alt = False
            maps["alt_target"] = maps["target"]
            maps["alt_mask"] = maps["patch" if self.mask_kind == "patch" else "mask"]
        h, w = maps["mask"].shape
        m = self.pad_multiple
        maps = _pad(maps, -(-h // m) * m, -(-w // m) * m)
        maps["has_alt"] = alt >= 0
        maps["alt_mean_radius"] = float(self.mean_radius[alt if alt >= 0 else index])
        return maps


def _stack(samples: list[dict], key: str) -> torch.Tensor:
    """(B,C,H,W) uint8 view of per-sample (H,W) or (H,W,C) arrays."""
    batch = torch.from_numpy(np.stack([s[key] for s in samples]))
    return batch.permute(0, 3, 1, 2) if batch.ndim == 4 else batch[:, None]


def collate_uint8(samples: list[dict]) -> dict[str, torch.Tensor]:
    """The batch with its maps still uint8 (B,C,H,W): colour and mask 0..255, focus and valid 0/1. A quarter of
    the bytes of the float batch; `to_float` turns it into the batch of the spec (on the GPU, under a Trainer)."""
    binary = _stack(samples, "mask")
    batch = {
        "image": _stack(samples, "image"),
        "target": _stack(samples, "target"),
        "mask": _stack(samples, "patch") if "patch" in samples[0] else binary,
        "focus": (binary == 0).view(torch.uint8),
        "depth_weight": _stack(samples, "weight"),
        "valid": _stack(samples, "valid"),
        "plane": torch.tensor([s["plane"] for s in samples], dtype=torch.long),
        "frame": torch.tensor([s["frame"] for s in samples], dtype=torch.long),
        "kind": torch.tensor([s["kind"] for s in samples], dtype=torch.long),
        "mean_radius": torch.tensor([s["mean_radius"] for s in samples], dtype=torch.float32),
        "amount": torch.tensor([s["amount"] for s in samples], dtype=torch.float32),
        "amount_told": torch.tensor([s["amount_told"] for s in samples], dtype=torch.bool),
        "strength": torch.tensor([s["strength"] for s in samples], dtype=torch.float32),
    }
    if "radius" in samples[0]:
        batch["radius"] = _stack(samples, "radius").float()
    if "alt_mask" in samples[0]:
        batch["alt_target"] = _stack(samples, "alt_target")
        batch["alt_mask"] = _stack(samples, "alt_mask")
        batch["has_alt"] = torch.tensor([s["has_alt"] for s in samples], dtype=torch.bool)
        batch["alt_mean_radius"] = torch.tensor([s["alt_mean_radius"] for s in samples], dtype=torch.float32)
    return batch


def _empty(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """An uninitialised float tensor; inside a DataLoader worker it lives in shared memory, so the batch reaches
    the main process without another copy (what default_collate does)."""
    if device.type != "cpu" or get_worker_info() is None:
        return torch.empty(shape, device=device)
    like = torch.empty(0)
    return like.new(like._typed_storage()._new_shared(math.prod(shape))).view(shape)


def to_float(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch of the spec from `collate_uint8`'s: image/target/alt_target (B,3,H,W) in [-1,1]; mask/alt_mask,
    depth_weight in [0,1] (masks exactly 0/0.5/1); focus, valid {0,1}. Float maps pass unchanged."""
    out = dict(batch)
    for key, (scale, offset) in FLOAT_SCALE.items():
        u8 = batch.get(key)
        if u8 is None or u8.dtype != torch.uint8:
            continue
        x = _empty(u8.shape, u8.device).copy_(u8).mul_(scale)
        if offset:
            x.add_(offset)
        if key in ("mask", "alt_mask"):  # 128/255 -> 0.5, 255/255 -> 1 exactly
            x.mul_(2).round_().div_(2)
        out[key] = x
    return out


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """The float batch of the spec (see `to_float`) plus, when asked, radius (B,1,H,W) float px (the renderer's blur
    radius of each pixel), plane, frame, kind (B,) long, mean_radius (B,) float (the target's mean blur radius over
    the frame's blurred pixels, px), amount (B,) float (the target's amount of blur: its mean radius over the
    sample's blurred pixels, px), amount_told (B,) bool (whether the generator is told it; training only may say
    no), strength (B,) float (the blur strength the
    target was rendered at: the thin-lens k times it; 1 = as stored) and, for val/test, has_alt (B,) bool and
    alt_mean_radius (B,) float (the opposite plane's mean_radius; the sample's own where it has none)."""
    return to_float(collate_uint8(samples))


class DefocusDataModule(L.LightningDataModule):
    """Train/val/test loaders over one HDF5 dataset; batches as described in `collate`."""

    def __init__(
        self,
        path: str,
        batch_size: int = 4,
        num_workers: int = 0,
        crop_size: int | None = 256,
        mask_kind: str = "binary",
        pad_multiple: int = 256,
        seed: int = 0,
        photometric: bool = True,
        uint8_batches: bool | None = None,
        radius: bool = False,
        strength_range: tuple[float, float] | None = None,
        unknown_amount: float = 0.0,
        patch_split: tuple[float, float] | None = None,
    ):
        """`uint8_batches`: loaders yield uint8 batches that `on_after_batch_transfer` makes float on the device (a
        quarter of the bytes to share, pin and copy); None = when a Trainer trains on an accelerator. `radius`:
        batches carry the renderer's per-pixel blur radius (for a radius loss term). `strength_range` (lo, hi):
        training targets rendered again at blur strengths drawn log-uniformly in it (see `DefocusDataset`; the
        file must be rendered with the thin_lens model); validation and test stay as stored, strength 1.
        `unknown_amount`: the share of training samples told no amount; `patch_split` (lo, hi): the range of plane
        levels where a training patch mask's line between partial and full blur is drawn (see `DefocusDataset`)."""
        super().__init__()
        if mask_kind not in MASK_KINDS:
            raise UserError(f"mask_kind: '{mask_kind}' is not one of {', '.join(MASK_KINDS)}")
        for key, value in (("batch_size", batch_size), ("pad_multiple", pad_multiple)):
            if value < 1:
                raise UserError(f"{key}: must be at least 1, got {value}")
        if crop_size is not None and crop_size < 1:
            raise UserError(f"crop_size: must be at least 1 (or None for full frames), got {crop_size}")
        if num_workers < 0:
            raise UserError(f"num_workers: must be >= 0, got {num_workers}")
        check_strength_range(strength_range, "strength_range")
        check_patch_split(patch_split, "patch_split", mask_kind, "mask_kind")
        if not 0 <= unknown_amount <= 1:
            raise UserError(f"unknown_amount: a share of the samples, from 0 to 1; got {unknown_amount:g}")
        self.path = Path(path)
        self.batch_size, self.num_workers, self.crop_size = batch_size, num_workers, crop_size
        self.mask_kind, self.pad_multiple, self.seed, self.photometric = mask_kind, pad_multiple, seed, photometric
        self.uint8_batches = uint8_batches
        self.radius, self.strength_range, self.unknown_amount = radius, strength_range, unknown_amount
        self.patch_split = patch_split
        self.datasets: dict[str, DefocusDataset] = {}
        self.train_weights: np.ndarray | None = None  # per train sample, its source's weight (set by `setup`)
        self.frame_side: int | None = None  # long side of the file's frames in px (set by `setup`)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        with open_dataset(self.path) as f:
            split = f["split"][:]
            meta = {name: f[name][:] for name in ("plane", "frame", "kind", "mean_radius")}
            source_weights = np.array([part["weight"] for part in json.loads(f.attrs["sources"])], np.float64)
            self.train_weights = source_weights[f["source"][:][split == 0]]
            self.frame_side = int(max(f["image"].shape[1:3]))
        common = {
            "crop_size": self.crop_size,
            "mask_kind": self.mask_kind,
            "pad_multiple": self.pad_multiple,
            "radius": self.radius,
        }
        # random focal planes are training augmentation: validation, test and the baselines' fit see the paper's
        scored = meta["plane"] != PLANES.index("random")
        for code, name in enumerate(SPLITS):
            self.datasets[name] = DefocusDataset(
                self.path,
                np.flatnonzero((split == code) & (scored | (name == "train"))),
                meta,
                train=name == "train",
                photometric=self.photometric and name == "train",
                strength_range=self.strength_range if name == "train" else None,
                unknown_amount=self.unknown_amount if name == "train" else 0.0,
                patch_split=self.patch_split if name == "train" else None,
                **common,
            )
        fit_common = {**common, "crop_size": None}
        self.datasets["fit"] = DefocusDataset(
            self.path, np.flatnonzero((split == 0) & scored), meta, train=False, photometric=False, **fit_common
        )

    def state_dict(self) -> dict:
        """Saved in every checkpoint (Lightning's datamodule hook): the training frames' long side, the scale at
        which `predict` shows photos to the generator (see `models.inference`)."""
        return {"frame_side": self.frame_side} if self.frame_side else {}

    def _loader(self, name: str, sampler: Sampler | None, drop_last: bool) -> DataLoader:
        self.setup()
        dataset = self.datasets[name]
        if len(dataset) == 0 and name == "train":
            raise UserError(f"{self.path}: the dataset has no {name} samples")
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate_uint8 if self._float_on_device() else collate,
            worker_init_fn=seed_worker,
            drop_last=drop_last,
            generator=torch.Generator().manual_seed(self.seed),
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _float_on_device(self) -> bool:
        """uint8 batches made float on the device (see `uint8_batches`); otherwise the float batch of the spec."""
        if self.uint8_batches is not None:
            return self.uint8_batches
        return self.trainer is not None and self.trainer.strategy.root_device.type != "cpu"

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return to_float(batch)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        n = len(self.datasets["train"])
        sampler = SeededSampler(n, self.seed, self.train_weights)
        return self._loader("train", sampler, drop_last=n >= self.batch_size)

    def _eval_sampler(self, name: str) -> Sampler | None:
        """Under a multi-process Trainer, each process scores its own share of the samples, each sample once
        (Lightning's default DistributedSampler repeats samples to even the shares out, which biases the metrics);
        the metric states are sums, so the reduced values equal one process's."""
        if self.trainer is None or self.trainer.world_size <= 1:
            return None
        self.setup()
        return EvenShares(self.datasets[name], num_replicas=self.trainer.world_size, rank=self.trainer.global_rank)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self._eval_sampler("val"), drop_last=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self._eval_sampler("test"), drop_last=False)

    def fit_dataloader(self, limit: int | None = None) -> DataLoader:
        """The training split as full frames, without augmentation (the evaluation pipeline), in file order: what a
        baseline is fitted on (`baselines.GlobalBlur`). `limit`: at most this many samples, spread over the split."""
        self.setup()
        dataset = self.datasets["fit"]
        if limit is not None and len(dataset) > limit:
            dataset = Subset(dataset, np.linspace(0, len(dataset) - 1, limit).round().astype(int).tolist())
        # its own generator: iterating a DataLoader draws a seed, which must not shift the run's global RNG stream
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=0, collate_fn=collate, generator=generator)
