"""Tensor operations shared by the renderer, the baselines and the deployable model: colour conversion, disk
blurs and the mask convention. This layer imports nothing else of the package."""
