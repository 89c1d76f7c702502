"""Renderer settings, recorded in HDF5 attributes and checkpoints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from defocus_lit.errors import UserError
from defocus_lit.render.layered import DEFAULT_LAYERS

BLUR_MODELS = ("thin_lens", "blur_map")


@dataclass
class RenderSettings:
    """Renderer settings; `to_dict()` is recorded in HDF5 attributes and checkpoints."""

    blur_model: str = "thin_lens"  # "thin_lens" | "blur_map"
    k: float = 30.0  # px per unit of nearness (inverse depth) outside the in-focus band (thin_lens)
    max_radius: float = 16.0  # px
    layers: int = DEFAULT_LAYERS

    def __post_init__(self) -> None:
        if self.blur_model not in BLUR_MODELS:
            raise UserError(f"render.blur_model: unknown model '{self.blur_model}'; valid: {', '.join(BLUR_MODELS)}")
        if not self.k >= 0:
            raise UserError(f"render.k: must be >= 0, got {self.k}")
        if not self.max_radius >= 0:
            raise UserError(f"render.max_radius: must be >= 0, got {self.max_radius}")
        if int(self.layers) != self.layers or self.layers < 1:
            raise UserError(f"render.layers: must be a positive integer, got {self.layers}")

    def to_dict(self) -> dict:
        return asdict(self)


def check_strength_range(strengths: Sequence[float] | None, key: str) -> None:
    """UserError naming `key` unless `strengths` is None (strength 1 only) or [lo, hi] with 0 < lo < hi < inf: the
    range of blur strengths (multipliers of the thin-lens k) a model trains over."""
    if strengths is not None and (len(strengths) != 2 or not 0 < strengths[0] < strengths[1] < math.inf):
        raise UserError(f"{key}={list(strengths)}: must be [lo, hi] with 0 < lo < hi")
