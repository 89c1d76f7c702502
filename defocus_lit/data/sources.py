"""RGB-D sources: a sequence of frames (colour image + depth or disparity), read lazily one frame at a time.

`open_source` validates everything it can up front (files exist, keys, columns, shapes) so a bad input fails
before any output is written; the checks that need the pixels (image and depth sizes, at least one valid depth
pixel) run when a frame is read. Every bad input raises `UserError` naming the file or key.
"""

from __future__ import annotations

import bisect
import csv
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import h5py
import numpy as np
import scipy.io
import yaml
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from defocus_lit.data.frames import KINDS, RGBDFrame, RGBDSource, check_frame
from defocus_lit.data.synthetic import SyntheticSource
from defocus_lit.errors import UserError
from defocus_lit.io import read_gray, read_rgb

MIXABLE = ("synthetic", "nyu-mat", "manifest")  # what a mix file may list
SOURCES = (*MIXABLE, "mix")
NYU_CROP = (45, 471, 41, 601)
DEFAULT_DEPTH_SCALE = 0.001


# ---------------------------------------------------------------------------------------------- nyu-mat


class NyuMatSource(RGBDSource):
    """The official NYU Depth V2 labelled file (MATLAB v7.3 = HDF5), read one frame at a time.

    h5py returns MATLAB arrays with the axes reversed: `images` (N,3,640,480) and `depths` (N,640,480), which
    we transpose to (480,640,3) and (480,640). The file handle is opened on first access in each process and
    dropped when pickled, so a source can go to DataLoader workers.
    """

    kind_name = "nyu-mat"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        splits: str | os.PathLike | None = None,
        crop: tuple[int, int, int, int] = NYU_CROP,
        num: int | None = None,
    ):
        self.path = Path(path)
        self.crop = tuple(int(c) for c in crop)
        self.splits_path = None if splits is None else Path(splits)
        total, height, width = self._validate_file()
        self._validate_crop(height, width)
        self.num = total if num is None else min(num, total)
        self._splits = self._read_splits(total) if self.splits_path is not None else None
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def _validate_file(self) -> tuple[int, int, int]:
        """Check keys, ranks and shapes; returns (frames, height, width) in image orientation."""
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such file")
        try:
            with h5py.File(self.path, "r") as f:
                for key in ("images", "depths"):
                    if key not in f or not isinstance(f[key], h5py.Dataset):
                        raise UserError(f"{self.path}: no dataset '{key}' (not the NYU Depth V2 labelled .mat?)")
                images, depths = f["images"].shape, f["depths"].shape
        except OSError as err:
            raise UserError(f"{self.path}: not a MATLAB v7.3 / HDF5 file ({err})") from None
        if len(images) != 4 or images[1] != 3:
            raise UserError(f"{self.path}: 'images' must be (N,3,W,H) as h5py reads MATLAB v7.3, got {images}")
        if len(depths) != 3 or depths != (images[0], images[2], images[3]):
            raise UserError(
                f"{self.path}: 'depths' must be (N,W,H) = {(images[0], *images[2:])} to match 'images', got {depths}"
            )
        if images[0] == 0:
            raise UserError(f"{self.path}: 'images' has no frames")
        return images[0], images[3], images[2]

    def _validate_crop(self, height: int, width: int) -> None:
        r0, r1, c0, c1 = self.crop
        if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
            raise UserError(
                f"crop: {self.crop} (rows r0:r1, cols c0:c1) does not fit the {width}x{height} frames of {self.path}"
            )

    def _read_splits(self, total: int) -> np.ndarray:
        """Per-frame split names from splits.mat (1-based `trainNdxs`/`testNdxs`); None where neither."""
        path = self.splits_path
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        try:
            mat = scipy.io.loadmat(path)
        except (ValueError, OSError, NotImplementedError) as err:
            raise UserError(f"{path}: not a readable MATLAB file ({err})") from None
        names = np.full(total, None, dtype=object)
        for key, split in (("trainNdxs", "train"), ("testNdxs", "test")):
            if key not in mat:
                raise UserError(f"{path}: no variable '{key}'")
            idx = np.asarray(mat[key]).ravel().astype(np.int64)
            if idx.size and (idx.min() < 1 or idx.max() > total):
                raise UserError(f"{path}: '{key}' holds indices outside 1..{total} (the .mat has {total} frames)")
            names[idx - 1] = split
        return names

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __len__(self) -> int:
        return self.num

    def _read(self, index: int) -> RGBDFrame:
        r0, r1, c0, c1 = self.crop
        f = self._handle()
        image = f["images"][index, :, c0:c1, r0:r1].transpose(2, 1, 0)
        depth = f["depths"][index, c0:c1, r0:r1].T
        frame = RGBDFrame(
            name=f"nyu_{index:05d}",
            image=np.ascontiguousarray(image, dtype=np.uint8),
            depth=np.ascontiguousarray(depth, dtype=np.float32),
            kind="depth",
            split=None if self._splits is None else self._splits[index],
        )
        where = f"{self.path}[{index}]"
        return check_frame(frame, where, where)

    def attrs(self) -> dict:
        splits = None if self.splits_path is None else str(self.splits_path.resolve())
        return {
            "source": self.kind_name,
            "path": str(self.path.resolve()),
            "num": self.num,
            "crop": list(self.crop),
            "splits": splits,
        }


# --------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class _ManifestRow:
    image: Path
    depth: Path
    kind: str
    scale: float


class ManifestSource(RGBDSource):
    """A CSV `image,depth[,kind,scale]` with paths relative to the CSV; other columns are ignored.

    kind "depth" (default): metres = value * scale (default 0.001, i.e. 16-bit millimetres).
    kind "disparity": relative inverse depth (larger = nearer) taken as-is, e.g. a 16-bit PNG or the first
    channel of an 8-bit JPEG; scale does not apply.
    """

    kind_name = "manifest"

    def __init__(self, path: str | os.PathLike, *, num: int | None = None):
        self.path = Path(path)
        rows = self._parse()
        self.rows = rows if num is None else rows[:num]

    def _parse(self) -> list[_ManifestRow]:
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such file")
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                columns = [c.strip() for c in reader.fieldnames or []]
                missing = [c for c in ("image", "depth") if c not in columns]
                if missing:
                    raise UserError(
                        f"{self.path}: missing column(s) {', '.join(missing)} "
                        f"(need image,depth[,kind,scale]; found {', '.join(columns) or 'no header'})"
                    )
                reader.fieldnames = columns
                rows = [self._row(raw, line) for line, raw in enumerate(reader, start=2)]
        except (UnicodeDecodeError, csv.Error) as err:
            raise UserError(f"{self.path}: not a readable CSV file ({err})") from None
        if not rows:
            raise UserError(f"{self.path}: no rows")
        return rows

    def _row(self, raw: dict, line: int) -> _ManifestRow:
        where = f"{self.path} line {line}"
        paths = {}
        for column in ("image", "depth"):
            value = (raw.get(column) or "").strip()
            if not value:
                raise UserError(f"{where}: empty '{column}'")
            full = self.path.parent / value
            if not full.is_file():
                raise UserError(f"{full}: no such file (named in {where})")
            paths[column] = full
        kind = (raw.get("kind") or "").strip() or "depth"
        if kind not in KINDS:
            raise UserError(f"{where}: kind '{kind}' must be one of {', '.join(KINDS)}")
        scale_text = (raw.get("scale") or "").strip()
        try:
            scale = float(scale_text) if scale_text else DEFAULT_DEPTH_SCALE
        except ValueError:
            raise UserError(f"{where}: scale '{scale_text}' is not a number") from None
        if not (np.isfinite(scale) and scale > 0):
            raise UserError(f"{where}: scale must be a positive number, got {scale_text}")
        return _ManifestRow(paths["image"], paths["depth"], kind, scale)

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, index: int) -> RGBDFrame:
        row = self.rows[index]
        depth = read_gray(row.depth).astype(np.float32)
        if row.kind == "depth":
            depth *= np.float32(row.scale)
        frame = RGBDFrame(name=_frame_name(row.image), image=read_rgb(row.image), depth=depth, kind=row.kind)
        return check_frame(frame, str(row.image), str(row.depth))

    def attrs(self) -> dict:
        return {
            "source": self.kind_name,
            "path": str(self.path.resolve()),
            "num": len(self),
            "kinds": sorted({row.kind for row in self.rows}),
        }


def recorded_photos(source_info: dict) -> list[Path]:
    """The image files of the manifest sources named by a dataset's recorded source (`read_info(...)["source"]`):
    the manifest itself or a mix's manifest parts, each read again from its CSV (its first `num` rows, as the build
    took them). UserError naming the CSV or a photo when it can no longer be read."""
    parts = source_info.get("parts") or [source_info]
    return [
        row.image
        for part in parts
        if part.get("source") == ManifestSource.kind_name
        for row in ManifestSource(part["path"], num=part.get("num")).rows
    ]


def _frame_name(image: Path) -> str:
    """The image file's stem without a trailing `_rgb`/`_color`/`_image` ("tum_office_rgb.png" -> "tum_office")."""
    stem = image.stem
    for suffix in ("_rgb", "_color", "_colour", "_image"):
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


# ------------------------------------------------------------------------------------------------- mix


class MixedSource(RGBDSource):
    """Several sources as one lazy sequence: frame i is frame i - offset[k] of the source k whose range holds it,
    named `NAME/frame` after its source. Each source carries the weight with which training draws its samples."""

    kind_name = "mix"

    def __init__(
        self, sources: Sequence[RGBDSource], weights: Sequence[float], *, path: str | os.PathLike | None = None
    ):
        if not sources or len(sources) != len(weights):
            raise UserError(f"mix: needs one weight per source, got {len(sources)} sources and {len(weights)} weights")
        if len(sources) > 256:
            raise UserError(f"mix: at most 256 sources (the file stores a uint8 source index), got {len(sources)}")
        self.sources, self.weights = list(sources), [float(w) for w in weights]
        self.path = None if path is None else Path(path)
        kinds = Counter(source.kind_name for source in self.sources)
        # a kind that occurs once is named by it; repeats by kind and position (manifest1, manifest2)
        self.names = [s.kind_name if kinds[s.kind_name] == 1 else f"{s.kind_name}{i}" for i, s in enumerate(sources)]
        self.offsets = np.cumsum([0, *(len(source) for source in self.sources)]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        part = bisect.bisect_right(self.offsets, index) - 1
        return part, index - self.offsets[part]

    def _read(self, index: int) -> RGBDFrame:
        part, local = self.locate(index)
        frame = self.sources[part][local]
        return replace(frame, name=f"{self.names[part]}/{frame.name}")

    def parts(self) -> list[dict]:
        return [
            {"name": name, "path": source.attrs().get("path"), "weight": weight, "frames": len(source)}
            for name, source, weight in zip(self.names, self.sources, self.weights)
        ]

    def attrs(self) -> dict:
        return {
            "source": self.kind_name,
            "path": None if self.path is None else str(self.path.resolve()),
            "num": len(self),
            "parts": [source.attrs() for source in self.sources],
        }


@dataclass
class MixEntry:
    """One source of a mix file: `open_source`'s arguments (paths relative to the file) and a sampling weight."""

    source: str = MISSING
    path: str | None = None
    num: int | None = None
    seed: int = 0
    weight: float = 1.0
    splits: str | None = None
    crop: list[int] | None = None


def read_mix(path: str | os.PathLike, size: tuple[int, int] | None = None) -> MixedSource:
    """The sources a mix file lists (`sources:` and a list of `MixEntry` mappings), each opened by `open_source`
    (`size` applies to synthetic ones); UserError naming the file and the key (`mix.yaml: sources[1].weight: ...`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        cfg = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError, yaml.YAMLError) as err:
        raise UserError(f"{path}: not a readable YAML file ({str(err).splitlines()[0]})") from None
    unknown = [key for key in cfg if key != "sources"] if isinstance(cfg, DictConfig) else []
    if unknown:
        raise UserError(f"{path}: {unknown[0]}: unknown key (a mix file has only `sources`)")
    entries = cfg.get("sources") if isinstance(cfg, DictConfig) else None
    if not isinstance(entries, ListConfig) or len(entries) == 0:
        raise UserError(f"{path}: sources: expected a list of sources ({{source: synthetic, num: 100}}, ...)")
    sources = [_open_entry(path, f"{path}: sources[{i}]", raw, size) for i, raw in enumerate(entries)]
    return MixedSource([source for source, _ in sources], [weight for _, weight in sources], path=path)


def _open_entry(path: Path, where: str, raw, size: tuple[int, int] | None) -> tuple[RGBDSource, float]:
    keys = [f.name for f in fields(MixEntry)]
    if not isinstance(raw, DictConfig):
        raise UserError(f"{where}: expected a mapping of {', '.join(keys)}, got {raw!r}")
    try:
        entry: MixEntry = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(MixEntry), raw))
    except OmegaConfBaseException as err:
        key = f"{where}.{err.full_key}" if err.full_key else where
        if isinstance(err, ConfigKeyError):
            raise UserError(f"{key}: unknown key (valid: {', '.join(keys)})") from None
        if isinstance(err, MissingMandatoryValue):
            raise UserError(f"{key}: missing (one of {', '.join(MIXABLE)})") from None
        raise UserError(f"{key}: {str(err).splitlines()[0]}") from None
    if entry.source == "mix":
        raise UserError(f"{where}.source: a mix cannot hold another mix; list its sources here")
    if entry.source not in MIXABLE:
        raise UserError(f"{where}.source: '{entry.source}' is not one of {', '.join(MIXABLE)}")
    if not math.isfinite(entry.weight):
        raise UserError(f"{where}.weight: must be a finite number, got {entry.weight:g}")
    if entry.weight <= 0:
        raise UserError(f"{where}.weight: must be > 0, got {entry.weight:g}")
    if entry.crop is not None and len(entry.crop) != 4:
        raise UserError(f"{where}.crop: expected [r0, r1, c0, c1], got {entry.crop}")

    def beside(value: str | None) -> str | None:
        return None if value is None else str(path.parent / value)

    try:
        source = open_source(
            entry.source,
            beside(entry.path),
            num=entry.num,
            size=size,
            seed=entry.seed,
            splits=beside(entry.splits),
            crop=None if entry.crop is None else tuple(entry.crop),
        )
    except UserError as err:
        text = str(
            err
        )  # "num: ..." -> "mix.yaml: sources[1].num: ..."; "x.csv: ..." -> "mix.yaml: sources[1]: x.csv: ..."
        raise UserError(f"{where}{'.' if text.split(':', 1)[0] in keys else ': '}{text}") from None
    return source, entry.weight


# ------------------------------------------------------------------------------------------------- open


def open_source(
    source: str,
    path: str | None = None,
    *,
    num: int | None = None,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    splits: str | None = None,
    crop: tuple[int, int, int, int] | None = None,
) -> RGBDSource:
    """Open a source by name: "synthetic" (num frames of size (H,W), frame i from seed+i), "nyu-mat" (the
    labelled .mat, optional splits.mat, crop rows r0:r1 cols c0:c1), "manifest" (a CSV) or "mix" (a YAML file of
    sources with their own num and seed, see `read_mix`).
    `num` keeps the first N frames of a file source; `size` applies to "synthetic" only (those of a mix too)."""
    if source not in SOURCES:
        raise UserError(f"{source}: unknown source (valid: {', '.join(SOURCES)})")
    if num is not None and num < 1:
        raise UserError(f"num: must be at least 1, got {num}")
    if splits is not None and source != "nyu-mat":
        raise UserError(f"splits: only the nyu-mat source has a splits file, not {source}")
    if crop is not None and source != "nyu-mat":
        raise UserError(f"crop: only the nyu-mat source is cropped, not {source}")
    if num is not None and source == "mix":
        raise UserError("num: a mix takes the frames to use per source, in its file")
    if source == "synthetic":
        return SyntheticSource(100 if num is None else num, size=(256, 256) if size is None else size, seed=seed)
    if path is None:
        raise UserError(f"path: the {source} source needs a path")
    if source == "nyu-mat":
        return NyuMatSource(path, splits=splits, crop=NYU_CROP if crop is None else crop, num=num)
    if source == "mix":
        return read_mix(path, size)
    return ManifestSource(path, num=num)
