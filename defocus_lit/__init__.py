"""defocus_lit: learn depth-aware defocus ("portrait mode") from RGB-D data with PyTorch Lightning."""

__version__ = "0.1.0"
