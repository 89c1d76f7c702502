"""The lens-blur renderer that makes the training targets (replaces the paper's Photoshop Lens Blur): blur radius
models and the layered, occlusion-aware, linear-light compositor. Imports only `defocus_lit.ops`."""

from defocus_lit.render.layered import METHODS, render_defocus, render_uint8, uint8_images
from defocus_lit.render.radius import blur_radius_blur_map, blur_radius_thin_lens
from defocus_lit.render.settings import BLUR_MODELS, RenderSettings, check_strength_range

__all__ = [
    "BLUR_MODELS",
    "METHODS",
    "RenderSettings",
    "blur_radius_blur_map",
    "blur_radius_thin_lens",
    "check_strength_range",
    "render_defocus",
    "render_uint8",
    "uint8_images",
]
