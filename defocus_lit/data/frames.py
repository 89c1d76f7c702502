"""An RGB-D frame and the lazy sequence of frames every source is (the synthetic generator and the file sources)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from defocus_lit.errors import UserError

KINDS = ("depth", "disparity")


@dataclass
class RGBDFrame:
    name: str
    image: np.ndarray  # (H,W,3) uint8 sRGB
    depth: np.ndarray  # (H,W) float32; metres (kind "depth") or relative disparity; 0/non-finite = no measurement
    kind: str  # "depth" | "disparity"
    split: str | None = None  # "train" | "test" when the source knows it
    # kind "depth" only: render the frame's samples a second time with the depth read as relative disparity
    # 1/depth, as a monocular network would give it (the synthetic outdoor scenes; see `SyntheticSource`)
    also_disparity: bool = False


class RGBDSource(Sequence[RGBDFrame], abc.ABC):
    """A lazy sequence of frames: `src[i]` reads frame i (negative indices count from the end)."""

    kind_name: str

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def _read(self, index: int) -> RGBDFrame: ...

    @abc.abstractmethod
    def attrs(self) -> dict:
        """JSON-able description recorded in the HDF5 attributes."""

    def locate(self, index: int) -> tuple[int, int]:
        """(source index, frame within that source) of frame `index`; a mix of sources (`MixedSource`) has several,
        any other source is source 0."""
        return 0, index

    def parts(self) -> list[dict]:
        """The sources this one is made of as recorded in the file's `sources` attribute: name, path (None for
        generated frames), sampling weight and frames read."""
        return [{"name": self.kind_name, "path": self.attrs().get("path"), "weight": 1.0, "frames": len(self)}]

    def __getitem__(self, index: int) -> RGBDFrame:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, not {type(index).__name__}")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"frame {index} out of range for a source of {n} frames")
        return self._read(int(index) % n)


def check_frame(frame: RGBDFrame, image_file: str, depth_file: str) -> RGBDFrame:
    """The per-frame checks: image (H,W,3), depth (H,W) of the same size, at least one valid depth pixel."""
    if frame.image.ndim != 3 or frame.image.shape[2] != 3:
        raise UserError(f"{image_file}: image must be (H,W,3), got shape {frame.image.shape}")
    if frame.depth.shape != frame.image.shape[:2]:
        dh, dw = frame.depth.shape[:2]
        ih, iw = frame.image.shape[:2]
        raise UserError(f"{depth_file}: depth is {dw}x{dh} but the image {image_file} is {iw}x{ih}")
    if not np.any(np.isfinite(frame.depth) & (frame.depth > 0)):
        raise UserError(f"{depth_file}: no valid depth pixel (all zero or non-finite)")
    return frame
