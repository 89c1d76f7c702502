"""Lens-blur renderer that makes the training targets (replaces the paper's Photoshop Lens Blur).

Per pixel blur radius from a thin-lens model (or the paper's blur map), then occlusion-aware layered
compositing: pixels are split by nearness into layers, each layer is blurred premultiplied (colour * alpha,
alpha) with an anti-aliased disk aperture and composited far to near with "over"; the result is normalised
by the accumulated alpha (so frame borders and occlusion gaps neither darken nor brighten). Everything
happens in linear light so that highlights bloom as real bokeh does.

Layers are cut along nearness where the blur radius changes (equal steps of sqrt(radius), finer near the
focus where small radius changes show most), so the layer budget is not spent on depth ranges whose radius
is constant (in focus, or clamped at the maximum), and pixels that must stay sharp (radius < 0.5 px) never
share a layer with blurred ones; those are composited unblurred.

Speed (method "fft", the default): a layer is convolved tile by tile (overlap-save FFT, two channels per
complex plane) only on the tiles its blurred pixels reach, with a tile size chosen per layer. Runs of layers
with wide disks (radius >= 8, 24, 48 px) are blurred and composited at 1/2, 1/4 or 1/8 resolution from
box-averaged premultiplied layers, then upsampled once (bilinear). Method "direct" is the plain reference:
the same layer plan, each layer blurred over the whole frame by `F.conv2d` at full resolution (mean
difference to "fft" about 0.1/255).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len
from torch import Tensor

from defocus_lit.ops.blur import IDENTITY_RADIUS, disk_kernel, half_width
from defocus_lit.ops.color import linear_to_srgb, srgb_to_linear

METHODS = ("fft", "direct")
DEFAULT_LAYERS = 12
RADIUS_STEP = 1 / 16  # px; layer radii are rounded to this, so disk spectra are shared and cached
_FINE_BINS = 1024  # nearness histogram resolution used to place the layer cuts
_EPS = 1e-8
_TILES = (16, 32, 64, 128)  # px, output tile sides to choose from per layer; multiples of _BLOCK
_LOWRES_FROM = (8.0, 24.0, 48.0)  # px: "fft" blurs disks of these radii at 1/2, 1/4, 1/8 resolution
_BASE = 16  # px, side of the accumulator tiles; divides every tile side
_STRIP = 64  # rows per F.conv2d call of method "direct"
_BLOCK = 16  # px, grid on which layer presence near a tile is counted


# ----------------------------------------------------------------------------------------------- kernel


def _window(tile: int, margin: int) -> int:
    """Side of the input window convolved for one output tile (overlap-save): tile + 2 * margin, rounded
    up to a fast FFT length."""
    return next_fast_len(tile + 2 * margin) if margin > 0 else tile


@lru_cache(maxsize=1024)
def _disk_spectrum(radius: float, side: int, device: str) -> Tensor:
    """Real spectrum (side,side) of the centred `disk_kernel(radius)` on a side x side grid. Cached: layer radii
    are quantised (`RADIUS_STEP`), so frames of a dataset share them."""
    kernel = disk_kernel(radius).to(device)
    m = kernel.shape[-1] // 2
    padded = torch.zeros(side, side, device=device)
    padded[: 2 * m + 1, : 2 * m + 1] = kernel
    return torch.fft.fft2(torch.roll(padded, (-m, -m), (0, 1))).real


def _conv_fft(x: Tensor, radius: float, crop: int, size: int) -> Tensor:
    """Disk blur of windows x (n,2,N,N,2) (channel pairs, see `_padded_pairs`); returns the blurred
    window's pixels [crop, crop + size) in both axes, (n,2,size,size,2), which must lie at least the kernel's
    half width inside the window: circular FFT convolution, whose wrap-around only reaches that outer band.
    Each channel pair is one complex plane (r + ig, b + ia): the centred, symmetric disk has a real
    spectrum, so real and imaginary parts blur independently."""
    spectrum = _disk_spectrum(radius, x.shape[2], str(x.device)).to(x.dtype)
    blurred = torch.fft.ifft2(torch.fft.fft2(torch.view_as_complex(x)).mul_(spectrum))
    return torch.view_as_real(blurred)[:, :, crop : crop + size, crop : crop + size]


# ----------------------------------------------------------------------------------------------- layers


def _layer_of_cells(mean_radius: Tensor, layers: int) -> Tensor:
    """Layer index for each occupied nearness cell (far to near), cutting the cells into `layers` runs of
    equal total variation of sqrt(radius). Crossing the identity radius costs a full layer step, so sharp
    and blurred cells always land in different layers; a run of sharp cells has no variation, so it stays
    one layer (compositing unblurred layers in any order gives the same result)."""
    if mean_radius.numel() == 1:
        return torch.zeros(1, dtype=torch.long)
    sharp = mean_radius < IDENTITY_RADIUS
    root = mean_radius.sqrt()
    steps = (root[1:] - root[:-1]).abs() * ~(sharp[1:] & sharp[:-1])
    cross = (sharp[1:] != sharp[:-1]).double()
    variation = float(steps.sum())
    if variation <= 0:
        return torch.zeros(len(mean_radius), dtype=torch.long)
    n_cross = float(cross.sum())
    jump = 1.001 * variation / max(layers - n_cross, 1.0)  # a little more than one layer step
    kappa = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(steps + cross * jump, 0)])
    step = float(kappa[-1]) / layers
    return torch.floor(kappa / step).long().clamp(max=layers - 1)


def _plan_layers(near: Tensor, radius: Tensor, layers: int) -> tuple[Tensor, list[float]]:
    """Split one frame (H,W) into depth layers. Returns the per-pixel layer index (H,W) long, 0 = farthest,
    and each layer's blur radius (the mean radius of its pixels). CPU, float64, deterministic."""
    near = near.double()
    radius = radius.double()
    lo, hi = float(near.min()), float(near.max())
    if hi - lo > 1e-12 * max(1.0, abs(hi)):
        cell = ((near - lo) / (hi - lo) * _FINE_BINS).long().clamp(0, _FINE_BINS - 1).flatten()
    else:
        cell = torch.zeros(near.numel(), dtype=torch.long)
    counts = torch.bincount(cell, minlength=_FINE_BINS)
    sums = torch.bincount(cell, weights=radius.flatten(), minlength=_FINE_BINS)
    occupied = counts > 0
    used, cell_layer = torch.unique(_layer_of_cells(sums[occupied] / counts[occupied], layers), return_inverse=True)
    lookup = torch.zeros(_FINE_BINS, dtype=torch.long)
    lookup[occupied] = cell_layer
    layer_counts = torch.zeros(len(used), dtype=torch.float64).index_add_(0, cell_layer, counts[occupied].double())
    layer_sums = torch.zeros(len(used), dtype=torch.float64).index_add_(0, cell_layer, sums[occupied])
    radii = (layer_sums / layer_counts / RADIUS_STEP).round() * RADIUS_STEP
    return lookup[cell].view(near.shape), radii.tolist()


def _block_presence(local_map: Tensor, count: int, canvas: tuple[int, int]) -> Tensor:
    """(count,1,Y/_BLOCK,X/_BLOCK) float for a canvas (Y,X): 1 where layer l (local_map == l) has a pixel in
    that block. Pixels of other levels (local_map outside 0..count-1) are ignored."""
    ny, nx = canvas[0] // _BLOCK, canvas[1] // _BLOCK
    by = (torch.arange(local_map.shape[0], device=local_map.device) // _BLOCK)[:, None]
    bx = (torch.arange(local_map.shape[1], device=local_map.device) // _BLOCK)[None, :]
    index = (local_map * ny + by) * nx + bx
    index = index[(local_map >= 0) & (local_map < count)]
    counts = torch.bincount(index, minlength=count * ny * nx)
    return (counts > 0).float().view(count, 1, ny, nx)


def _coverage_presence(alpha: Tensor, canvas: tuple[int, int]) -> Tensor:
    """`_block_presence` for box-averaged layers: alpha (count,h,w) coverage -> (count,1,Y/_BLOCK,X/_BLOCK)."""
    covered = F.pad((alpha > 0).float(), (0, canvas[1] - alpha.shape[2], 0, canvas[0] - alpha.shape[1]))
    return F.max_pool2d(covered[:, None], _BLOCK)


def _choose_tiling(blocks: Tensor, half: int, tiles: tuple[int, ...]) -> tuple[int, Tensor]:
    """Tile side and bool (tiles_y, tiles_x) presence for one layer: the tiles its blurred pixels reach (the
    kernel's half width `half` around its blocks), for the tile size that convolves the fewest window pixels
    (small tiles for sparse layers, large ones for wide layers with a wide kernel)."""
    grow = -(-half // _BLOCK)
    near = F.max_pool2d(blocks, 2 * grow + 1, 1, grow) if grow else blocks
    best = None
    for tile in tiles:
        presence = F.max_pool2d(near, tile // _BLOCK)[0] > 0
        cost = int(presence.sum()) * _window(tile, half) ** 2
        if best is None or cost < best[0]:
            best = (cost, tile, presence)
    return best[1], best[2]


# ----------------------------------------------------------------------------------------------- render


def _padded_pairs(x: Tensor, padding: tuple[int, int, int, int]) -> Tensor:
    """(4,h,w) -> (2,Y,X,2), zero-padded by (left, right, top, bottom): channels as the pairs
    ((r, g), (b, alpha)) in the layout the FFT blurs as complex planes."""
    left, right, top, bottom = padding
    h, w = x.shape[-2:]
    out = x.new_zeros(2, top + h + bottom, left + w + right, 2)
    out[:, top : top + h, left : left + w] = x.unflatten(0, (2, 2)).movedim(1, -1)
    return out


def _windows(source: Tensor, start: int, side: int, tile: int, iy: Tensor, ix: Tensor) -> Tensor:
    """Copies (n,C,side,side,P) of the windows of a canvas (C,Y,X,P) that start at
    (start + iy * tile, start + ix * tile)."""
    sc, sy, sx, sp = source.stride()
    count_y = (source.shape[1] - start - side) // tile + 1
    count_x = (source.shape[2] - start - side) // tile + 1
    grid = source.as_strided(
        (count_y, count_x, source.shape[0], side, side, source.shape[3]),
        (tile * sy, tile * sx, sc, sy, sx, sp),
        source.storage_offset() + start * (sy + sx),
    )
    return grid[iy, ix]


class _SharpLayers:
    """Full-resolution layers: the frame's premultiplied pixels, layer j's alpha = (layer map == first + j).
    Canvases are zero-padded by `padding` (left, right, top, bottom) and stored as channel pairs."""

    def __init__(self, rgb1: Tensor, layer_map: Tensor, first: int, padding: tuple[int, int, int, int]):
        left, right, top, bottom = padding
        height, width = layer_map.shape
        self.rgb = _padded_pairs(rgb1, padding)
        self.map = rgb1.new_full((1, top + height + bottom, left + width + right, 2), -1)  # layer index, twice
        self.map[0, top : top + height, left : left + width] = layer_map[..., None]
        self.first, self.pad = first, top

    def windows(self, layer: int, half: int, side: int, tile: int, iy: Tensor, ix: Tensor) -> Tensor:
        start = self.pad - half
        alpha = _windows(self.map, start, side, tile, iy, ix) == self.first + layer
        return _windows(self.rgb, start, side, tile, iy, ix).mul_(alpha)


class _PooledLayers:
    """Reduced-resolution layers first..first+count-1: premultiplied and box-averaged by `scale` (partial blocks
    at the frame's edge average over scale x scale too, the missing pixels counting as empty), in a canvas
    (count,2,Y,X,2) padded like `_SharpLayers`."""

    def __init__(
        self, rgb1: Tensor, layer_map: Tensor, first: int, count: int, scale: int, padding: tuple[int, int, int, int]
    ):
        height, width = layer_map.shape
        h, w = -(-height // scale), -(-width // scale)
        left, right, top, bottom = padding
        self.layers = rgb1.new_zeros(count, 2, top + h + bottom, left + w + right, 2)
        for layer in range(count):
            premult = F.pad(rgb1 * (layer_map == first + layer), (0, w * scale - width, 0, h * scale - height))
            pooled = F.avg_pool2d(premult[None], scale)[0]  # (4,h,w)
            self.layers[layer, :, top : top + h, left : left + w] = pooled.unflatten(0, (2, 2)).movedim(1, -1)
        self.alpha = self.layers[:, 1, top : top + h, left : left + w, 1]  # (count,h,w) coverage
        self.pad = top

    def windows(self, layer: int, half: int, side: int, tile: int, iy: Tensor, ix: Tensor) -> Tensor:
        return _windows(self.layers[layer], self.pad - half, side, tile, iy, ix)


def _base_tiles(premult: Tensor, iy: Tensor, ix: Tensor, tiles_x: int) -> tuple[Tensor, Tensor]:
    """Split output tiles (n,2,T,T,2) at tile grid positions (iy, ix) into base tiles: a strided view
    (n,k,k,2,B,B,2) (k = T / B) and their indices (n*k*k,) into the canvas's base-tile list."""
    tile = premult.shape[2]
    k = tile // _BASE
    view = premult.unflatten(2, (k, _BASE)).unflatten(4, (k, _BASE)).permute(0, 2, 4, 1, 3, 5, 6)
    sub = torch.arange(k, device=iy.device)
    rows = (iy[:, None, None] * k + sub[None, :, None]) * (tiles_x * k)
    index = rows + ix[:, None, None] * k + sub[None, None, :]
    return view, index.flatten()


def _composite_level(
    source: _SharpLayers | _PooledLayers,
    blocks: Tensor,
    radii: list[float],
    canvas: tuple[int, int],
    tiles: tuple[int, ...],
) -> Tensor:
    """Blur the layers of one level and composite them far to near ("over"). Each layer is convolved tile by
    tile (overlap-save), only on the tiles it reaches. The accumulator is a list of (2,B,B,2) base tiles.
    Returns the premultiplied (4,Y,X) canvas."""
    canvas_y, canvas_x = canvas
    base_y, base_x = canvas_y // _BASE, canvas_x // _BASE
    acc = torch.zeros(base_y * base_x, 2, _BASE, _BASE, 2, dtype=blocks.dtype, device=blocks.device)
    for layer, radius in enumerate(radii):
        half = half_width(radius)
        tile, presence = _choose_tiling(blocks[layer], half, tiles)
        iy, ix = torch.nonzero(presence, as_tuple=True)
        premult = source.windows(layer, half, _window(tile, half), tile, iy, ix)
        if half:
            premult = _conv_fft(premult, radius, half, tile)
        parts, index = _base_tiles(premult, iy, ix, canvas_x // tile)
        below = acc[index].view(parts.shape)
        torch.addcmul(parts, below, 1 - parts[..., 1:, :, :, 1:], out=below)  # premultiplied "over"
        acc[index] = below.flatten(0, 2)
    return acc.view(base_y, base_x, 2, _BASE, _BASE, 2).permute(2, 5, 0, 3, 1, 4).reshape(4, canvas_y, canvas_x)


def _scale(radius: float) -> int:
    """Resolution divisor for a layer: wide disks are blurred at 1/2, 1/4, 1/8 resolution (from the radii in
    _LOWRES_FROM, so the disk keeps 4-6 px there)."""
    return 2 ** sum(radius >= r for r in _LOWRES_FROM)


def _render_level(rgb1: Tensor, layer_map: Tensor, first: int, radii: list[float], scale: int) -> Tensor:
    """Blur and composite layers first..first+len(radii)-1 (all of one scale) at 1/scale resolution and
    bring the premultiplied result back to full resolution (bilinear): (4,H,W)."""
    height, width = layer_map.shape
    h, w = -(-height // scale), -(-width // scale)
    tiles = tuple(t for t in _TILES if t == _TILES[0] or t <= min(h, w))
    canvas = (-(-h // tiles[-1]) * tiles[-1], -(-w // tiles[-1]) * tiles[-1])
    radii = [r / scale for r in radii]
    halves = [half_width(r) for r in radii]
    pad = max(halves)
    extra = max(0, max(_window(t, m) - t - m for t in tiles for m in halves) - pad)  # FFT rounding slack
    padding = (pad, canvas[1] - w + pad + extra, pad, canvas[0] - h + pad + extra)
    if scale == 1:
        source = _SharpLayers(rgb1, layer_map, first, padding)
        blocks = _block_presence(layer_map - first, len(radii), canvas)
    else:
        source = _PooledLayers(rgb1, layer_map, first, len(radii), scale, padding)
        blocks = _coverage_presence(source.alpha, canvas)
    level = _composite_level(source, blocks, radii, canvas, tiles)[:, :h, :w]
    if scale == 1:
        return level
    return F.interpolate(level[None], scale_factor=scale, mode="bilinear", align_corners=False)[0, :, :height, :width]


def _composite_frame(linear: Tensor, layer_map: Tensor, radii: list[float]) -> Tensor:
    """Blur and composite one frame. Consecutive layers of equal scale (see `_scale`) form a level, rendered
    at its own resolution; levels are composited far to near ("over" is associative, so this equals
    compositing layer by layer, up to the order of bilinear upsampling and compositing). Pixels are stored
    as channel pairs ((r, g), (b, alpha)), which the FFT path blurs as two complex planes without copying.

    linear (3,H,W) linear light; layer_map (H,W) long on the same device, 0 = farthest layer.
    Returns (3,H,W) linear light."""
    rgb1 = torch.cat([linear, torch.ones_like(linear[:1])])
    scales = [_scale(r) for r in radii]
    acc = None
    first = 0
    while first < len(radii):
        end = first + 1
        while end < len(radii) and scales[end] == scales[first]:
            end += 1
        level = _render_level(rgb1, layer_map, first, radii[first:end], scales[first])
        acc = level if acc is None else torch.addcmul(level, acc, 1 - level[3:])
        first = end
    return acc[:3] / acc[3:].clamp_min(_EPS)


def _conv_same(x: Tensor, kernel: Tensor) -> Tensor:
    """x (C,H,W) convolved with a symmetric kernel, zero padding, same size. `F.conv2d` runs on strips of
    _STRIP rows: on CPU that is many times faster than one call on a large frame."""
    half = kernel.shape[-1] // 2
    padded = F.pad(x, (half, half, half, half))[:, None]
    strips = [
        F.conv2d(padded[..., y : y + _STRIP + 2 * half, :], kernel[None, None].to(x))
        for y in range(0, x.shape[-2], _STRIP)
    ]
    return torch.cat(strips, -2)[:, 0]


def _composite_direct(linear: Tensor, layer_map: Tensor, radii: list[float]) -> Tensor:
    """The reference for `_composite_frame`, written for clarity: each layer over the whole frame, blurred by
    `F.conv2d` with zero padding at full resolution. Same arguments and result."""
    rgb1 = torch.cat([linear, torch.ones_like(linear[:1])])
    acc = torch.zeros_like(rgb1)
    for layer, radius in enumerate(radii):
        premult = rgb1 * (layer_map == layer)
        if radius >= IDENTITY_RADIUS:
            premult = _conv_same(premult, disk_kernel(radius))
        acc = torch.addcmul(premult, acc, 1 - premult[3:])
    return acc[:3] / acc[3:].clamp_min(_EPS)


def render_defocus(
    image: Tensor, radius: Tensor, near: Tensor, layers: int = DEFAULT_LAYERS, method: str = "fft"
) -> Tensor:
    """Render lens blur.

    image (B,3,H,W) sRGB in [0,1]; radius (B,1,H,W) blur radius in px; near (B,1,H,W) nearness (larger =
    nearer), which orders the layers. Returns (B,3,H,W) sRGB in [0,1] on the image's device.
    method "fft" (fast, tiled FFT, wide disks at reduced resolution) or "direct" (each layer over the whole
    frame by F.conv2d at full resolution: the slow reference). Deterministic."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B,3,H,W), got {tuple(image.shape)}")
    expected = (image.shape[0], 1, *image.shape[2:])
    if tuple(radius.shape) != expected or tuple(near.shape) != expected:
        raise ValueError(f"radius and near must be {expected}, got {tuple(radius.shape)} and {tuple(near.shape)}")
    if not (torch.isfinite(radius).all() and torch.isfinite(near).all()):
        raise ValueError("radius and near must be finite (fill missing depth first)")
    linear = srgb_to_linear(image.float())
    near_cpu, radius_cpu = near.detach().cpu(), radius.detach().cpu().clamp_min(0)
    out = []
    for b in range(image.shape[0]):
        layer_map, radii = _plan_layers(near_cpu[b, 0], radius_cpu[b, 0], layers)
        composite = _composite_frame if method == "fft" else _composite_direct
        out.append(composite(linear[b], layer_map.to(image.device), radii))
    return linear_to_srgb(torch.stack(out)).to(image.dtype)


def render_uint8(
    images: np.ndarray, near: np.ndarray, radius: np.ndarray, layers: int = DEFAULT_LAYERS, device: str = "cpu"
) -> np.ndarray:
    """`render_defocus` on numpy: images (N,H,W,3) uint8 sRGB, near and radius (N,H,W). Returns (N,H,W,3) uint8."""
    image = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div(255)
    near_t = torch.from_numpy(np.ascontiguousarray(near, dtype=np.float32))[:, None].to(device)
    radius_t = torch.from_numpy(np.ascontiguousarray(radius, dtype=np.float32))[:, None].to(device)
    return uint8_images(render_defocus(image, radius_t, near_t, layers))


def uint8_images(image: Tensor) -> np.ndarray:
    """(N,3,H,W) sRGB in [0,1] -> (N,H,W,3) uint8 on the CPU."""
    return image.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
