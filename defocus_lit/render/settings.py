"""Renderer settings, recorded in HDF5 attributes and checkpoints."""

from __future__ import annotations

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
