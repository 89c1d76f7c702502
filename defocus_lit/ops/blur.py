"""Disk (aperture) kernels and the FFT blurs built on them: `fft_blur` (each pixel averages the photo over a disk:
the `blur_stack` head) and `spread_blur` (each layer's pixels spread over their own disk: the baselines and the
`blur_spread` head). The layered renderer builds its own tiled FFT on `disk_kernel`.

Borders as in the renderer: zero padding, then division by the blurred coverage, so a disk is renormalised over
the pixels inside the frame.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IDENTITY_RADIUS = 0.5  # px; disks smaller than this are the identity
_SUPERSAMPLE = 16  # per axis, for the anti-aliased rim of the disk kernel
_EPS = 1e-8


def half_width(radius: float) -> int:
    """Half the side of `disk_kernel(radius)`: the last pixel centre with a nonzero weight."""
    return int(np.ceil(radius + 0.5)) - 1 if radius >= IDENTITY_RADIUS else 0


def disk_kernel(radius: float) -> Tensor:
    """(2h+1, 2h+1) float32 disk of `radius` px, summing to 1. Anti-aliased: each weight is the fraction of
    the pixel's square inside the circle (16x16 supersampling on the rim), so the area is pi * radius^2.
    Below 0.5 px it is the 1x1 identity."""
    h = half_width(radius)
    if h == 0:
        return torch.ones(1, 1)
    ax = np.abs(np.arange(-h, h + 1, dtype=np.float64))
    gap = np.maximum(ax - 0.5, 0)
    nearest = np.hypot(gap[:, None], gap[None, :])  # distance to the closest point of each pixel's square
    farthest = np.hypot(ax[:, None] + 0.5, ax[None, :] + 0.5)
    weight = (farthest <= radius).astype(np.float64)
    rim_y, rim_x = np.nonzero((nearest < radius) & (farthest > radius))
    offsets = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - 0.5
    ys = ax[rim_y][:, None, None] + offsets[None, :, None]
    xs = ax[rim_x][:, None, None] + offsets[None, None, :]
    weight[rim_y, rim_x] = (ys**2 + xs**2 <= radius**2).mean((1, 2))
    return torch.from_numpy(weight / weight.sum()).float()


def disk_stack(radii: list[float]) -> Tensor:
    """(N,K,K) disk kernels of the given radii, each zero-padded (centred) to the largest one's size K."""
    kernels = [disk_kernel(r) for r in radii]
    half = max(k.shape[-1] // 2 for k in kernels)
    return torch.stack([F.pad(k, [half - k.shape[-1] // 2] * 4) for k in kernels])


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """x (B,C,H,W) filtered by a separable Gaussian of `sigma` px (3 sigma wide each side), zero padding."""
    half = max(1, round(3 * sigma))
    taps = torch.exp(-(torch.arange(-half, half + 1, dtype=x.dtype, device=x.device) ** 2) / (2 * sigma**2))
    taps = (taps / taps.sum()).expand(x.shape[1], 1, -1)
    x = F.conv2d(x, taps[..., None, :], padding=(0, half), groups=x.shape[1])
    return F.conv2d(x, taps[..., :, None], padding=(half, 0), groups=x.shape[1])


def fft_blur(x: Tensor, kernels: Tensor) -> Tensor:
    """x (B,C,H,W) blurred by one FFT with kernels (K,k,k) (every sample with every kernel) or (B,K,k,k) (each
    sample with its own), odd k -> (B,K,C,H,W). Shapes flow from the input, so a traced or exported model takes
    any size."""
    if kernels.dim() == 3:
        kernels = kernels[None]
    half = kernels.shape[-1] // 2
    padded = F.pad(torch.cat([x, torch.ones_like(x[:, :1])], 1), [half, half, half, half])
    size = padded.shape[-2:]
    spectrum = torch.fft.rfft2(padded[:, None]) * torch.fft.rfft2(kernels[:, :, None], s=size)
    blurred = torch.fft.irfft2(spectrum, s=size)[
        ..., 2 * half : 2 * half + x.shape[-2], 2 * half : 2 * half + x.shape[-1]
    ]
    return blurred[:, :, :-1] / blurred[:, :, -1:].clamp_min(_EPS)


def spread_blur(x: Tensor, weights: Tensor, kernels: Tensor, per_sample: bool = False) -> Tensor:
    """x (B,C,H,W) split into layers by `weights` (B,L,H,W) in [0,1]; each layer spread by its own kernel of
    `kernels` (*S,L,k,k), odd k, premultiplied (colour * weight, weight), and the layers' sum normalised by the
    spread weight -> (B,*S,C,H,W), one output per leading kernel set S (none: (B,C,H,W)). `per_sample`: kernels
    (B,L,k,k), each sample spread with its own set -> (B,C,H,W).

    A pixel's colour reaches every pixel its disk covers, whatever those choose (a blurred near object spreads
    over its surroundings), and a sharp layer's pixels reach no blurred neighbour (no halo of a sharp subject in
    the blurred background), as in the renderer's layered compositing, which also orders the layers by depth.
    Zero padding: the normalisation renormalises at the frame's borders too."""
    half = kernels.shape[-1] // 2
    layers = torch.cat([x[:, None] * weights[:, :, None], weights[:, :, None]], 2)  # (B,L,C+1,H,W)
    padded = F.pad(layers, [half, half, half, half])
    size = padded.shape[-2:]
    spectrum = torch.fft.rfft2(padded)
    if not per_sample:
        spectrum = spectrum.view(spectrum.shape[0], *[1] * (kernels.dim() - 3), *spectrum.shape[1:])
    spectrum = (spectrum * torch.fft.rfft2(kernels.unsqueeze(-3), s=size)).sum(-4)  # (B,*S,C+1,h,w)
    spread = torch.fft.irfft2(spectrum, s=size)[
        ..., 2 * half : 2 * half + x.shape[-2], 2 * half : 2 * half + x.shape[-1]
    ]
    return spread[..., :-1, :, :] / spread[..., -1:, :, :].clamp_min(_EPS)
