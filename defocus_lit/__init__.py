"""defocus_lit: learn depth-aware defocus ("portrait mode") from RGB-D data with PyTorch Lightning.

The Python API (`defocus_lit.api`): `load_model(ckpt)` -> a `Model` that defocuses photos (`.defocus`, `.blur_radius`,
`.guess_amount`, `.evaluate`), `evaluate(ckpt, manifest=...)`, `build_dataset(...)` and `subject_mask(photo,
box=...)`, the subject's mask selected from a box around it.
"""

__version__ = "0.1.0"
API = ("Model", "build_dataset", "evaluate", "load_model", "subject_mask")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    """The Python API, imported on first use (PEP 562) so that `import defocus_lit`, and with it the command line's
    start, stays light: the API brings in torch and Lightning."""
    if name in API:
        from defocus_lit import api

        return getattr(api, name)
    raise AttributeError(f"module 'defocus_lit' has no attribute {name!r}")
