"""Procedural RGB-D scenes ("dead leaves with depth") so that everything runs with no download.

A level pinhole camera looks into a room (floor, back wall, optional side walls and ceiling) or onto open
ground (ground, a far backdrop with an irregular skyline, sky). Textured shapes (spheres, boxes, cylinders,
blobs) stand on the floor, float, hang on the wall as pictures or occlude the view as near "leaves"; small
lights and glossy spheres give bright spots so bokeh shows. Everything is placed in metres and projected, so
the depth cues of real photos appear by construction: surfaces are textured in world units (texture scale and
object size shrink with distance), floors recede to the horizon, objects rest on the floor (lower in the frame
= nearer) and cast contact shadows, nearer objects occlude farther ones (z-buffer, drawn far to near), light
falls off (indoors) or haze grows (outdoors) with distance. Textures come from a fixed bank of periodic tiles
with natural statistics (1/f noise, stripes, planks, checkerboards, bricks, cells with edges, dots, marble,
grain), pre-filtered into mip levels so far surfaces lose detail instead of aliasing.

Depth is metres in about 1..10 (the sky is 10). Same seed and size -> bit-identical frame; the random draws do
not depend on the size, so one seed gives the same scene at any resolution (up to sensor noise). Vectorised
numpy: each object is drawn on its own bounding box only.
"""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass, replace

import numpy as np

from defocus_lit.data.frames import RGBDFrame, RGBDSource
from defocus_lit.errors import UserError

SCENES_VERSION = 9  # bumped whenever a seed's scene or the dataset layout changes (names the cached dataset)
MAX_DEPTH = 10.0
CLOSE_UP_CHANCE = 0.5  # share of indoor scenes built at a smaller scale (a desk, a tabletop, a shelf)
CLOSE_UP_SCALE = (0.25, 0.8)  # their scale factor, log-uniform
TILT_CHANCE = {True: 0.8, False: 0.2}  # share of close-ups (True) and room-size indoor scenes seen from above
TILT_RANGE = (0.1, 0.9)  # their downward tilt, radians (6 to 52 degrees), uniform
PERSON_CHANCE = {True: 0.6, False: 0.25}  # share of outdoor (True) and indoor room-size scenes with a person near by
TEXTURE_DENSITY = (0.5, 2.0)  # every texture of a scene is denser by one log-uniform factor in this range
MIN_SIZE = 8
TILE = 256  # texels per tile side (a power of two: texel indices wrap with a bit mask)
LEVELS = 8  # mip levels; level k is the tile blurred with sigma 0.5 * 2**(k-1) texels (level 0 = sharp)
_BANK_SEED = 20240611

NOISE = (0, 1, 2, 3)  # 1/f^beta noise, rough to smooth
STRIPES, PLANKS, CHECKER, BRICKS, CELLS, DOTS, MARBLE, GRAIN = range(4, 12)
OBJECT_TEXTURES = (*NOISE, STRIPES, CHECKER, CELLS, DOTS, MARBLE, GRAIN, BRICKS, PLANKS)


# ------------------------------------------------------------------------------------------- texture bank


def _freqs() -> tuple[np.ndarray, np.ndarray]:
    f = np.fft.fftfreq(TILE).astype(np.float32)
    return f[None, :], f[:, None]  # fx (1,T), fy (T,1) in cycles per texel


def _normalise01(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, (1, 99))
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def _power_noise(rng: np.random.Generator, beta: float, stretch: float = 1.0) -> np.ndarray:
    """Periodic (T,T) noise with a 1/f^beta amplitude spectrum; stretch > 1 elongates it along x (grain)."""
    fx, fy = _freqs()
    radius = np.sqrt((fx * stretch) ** 2 + fy**2)
    radius[0, 0] = np.inf
    spectrum = np.fft.fft2(rng.standard_normal((TILE, TILE))) / radius**beta
    return _normalise01(np.fft.ifft2(spectrum).real)


def _wrapped(a: np.ndarray, b: float) -> np.ndarray:
    d = np.abs(a - b)
    return np.minimum(d, TILE - d)


def _tiles(rng: np.random.Generator) -> list[np.ndarray]:
    """The bank's tiles, periodic (T,T) in 0..1, in the order of the texture constants above."""
    y, x = np.mgrid[0:TILE, 0:TILE].astype(np.float32)
    noise = [_power_noise(rng, beta) for beta in (1.0, 1.4, 1.9, 2.6)]
    grain = _power_noise(rng, 1.6, stretch=8.0)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 8 * x / TILE + 3.0 * noise[3])
    plank_h = TILE // 8
    plank_tone = rng.uniform(0.35, 0.75, 8)[(y // plank_h).astype(int)]
    planks = np.where(y % plank_h < 2, 0.05, plank_tone + 0.35 * (grain - 0.5))
    checker = 0.15 + 0.7 * (((x // 32) + (y // 32)) % 2) + 0.15 * (noise[1] - 0.5)
    brick_row = (y // 16).astype(int)
    shifted = x + 32 * (brick_row % 2)
    brick_tone = rng.uniform(0.3, 0.7, (16, 4))[brick_row, (shifted // 64).astype(int) % 4]
    bricks = np.where((y % 16 < 2) | (shifted % 64 < 2), 0.95, brick_tone + 0.3 * (noise[0] - 0.5))
    seeds = rng.uniform(0, TILE, (28, 2))
    dist = np.stack([np.hypot(_wrapped(x, sx), _wrapped(y, sy)) for sx, sy in seeds])
    nearest = np.sort(dist, axis=0)
    cell_tone = rng.uniform(0.3, 1.0, 28)[np.argmin(dist, axis=0)]
    cells = np.where(nearest[1] - nearest[0] < 2.0, 0.0, cell_tone + 0.2 * (noise[1] - 0.5))
    dots = (np.hypot(_wrapped(x % 32, 16), _wrapped(y % 32, 16)) < 9).astype(np.float32)
    marble = 0.5 + 0.5 * np.sin(2 * np.pi * 2 * (x + y) / TILE + 7.0 * noise[2])
    tiles = [*noise, stripes, planks, checker, bricks, cells, dots, marble, grain]
    return [np.clip(t, 0, 1).astype(np.float32) for t in tiles]


@functools.lru_cache(maxsize=1)
def texture_bank() -> np.ndarray:
    """(K, LEVELS+1, T, T) float32 in 0..1: K periodic tiles, each pre-blurred (periodic Gaussian) per mip level;
    the extra last level repeats the blurriest so a blend with "the next level" never runs off the end.
    Built once per process from a fixed seed (deterministic)."""
    fx, fy = _freqs()
    freq2 = fx**2 + fy**2
    tiles = _tiles(np.random.default_rng(_BANK_SEED))
    bank = np.empty((len(tiles), LEVELS + 1, TILE, TILE), np.float32)
    for k, tile in enumerate(tiles):
        spectrum = np.fft.fft2(tile)
        bank[k, 0] = tile
        for level in range(1, LEVELS):
            sigma = 0.5 * 2 ** (level - 1)
            bank[k, level] = np.fft.ifft2(spectrum * np.exp(-2 * np.pi**2 * sigma**2 * freq2)).real
        bank[k, LEVELS] = bank[k, LEVELS - 1]
    return bank


def sample_texture(tile: int, u: np.ndarray, v: np.ndarray, footprint: np.ndarray | float) -> np.ndarray:
    """float32 texture values 0..1 at texel coordinates (u, v) (broadcastable; wrapping, nearest texel) from the
    two mip levels around `footprint` (texels per pixel, an array or one value), blended. Materials keep the
    footprint at about half a texel or more, so nearest texels do not show as blocks."""
    flat = texture_bank()[tile].reshape(-1)
    index = (np.floor(v).astype(np.int64) & (TILE - 1)) * TILE + (np.floor(u).astype(np.int64) & (TILE - 1))
    if np.ndim(footprint) == 0:
        level = min(math.log2(max(float(footprint), 0.5)) + 1.0, LEVELS - 1.0)
        lower = int(level)
        frac = np.float32(level - lower)
    else:
        level = np.minimum(np.log2(np.maximum(footprint, 0.5)) + 1.0, LEVELS - 1.0)
        lower = level.astype(np.int64)
        frac = (level - lower).astype(np.float32)
    index = index + lower * (TILE * TILE)
    a = flat[index]
    if np.ndim(frac) == 0 and frac == 0:
        return a
    return a + (flat[index + TILE * TILE] - a) * frac


# ----------------------------------------------------------------------------------------------- canvas


class Canvas:
    """Colour (3,H,W) float 0..1 (channels first, so per-channel work on a pixel subset is contiguous) and
    depth (H,W) metres (inf = empty), with z-tested, anti-aliased painting: a sprite shows only where it is
    nearer than what is already there, whatever the drawing order."""

    def __init__(self, height: int, width: int):
        self.rgb = np.zeros((3, height, width), np.float32)
        self.depth = np.full((height, width), np.inf, np.float32)

    def paint(self, rows: slice, cols: slice, alpha: np.ndarray, depth: np.ndarray | float, rgb: np.ndarray) -> None:
        """Composite a sprite onto the window [rows, cols]: alpha (h,w) coverage 0..1, depth (h,w) metres (or
        one value), rgb (3,h,w) (or (3,1,1)). Colour blends by coverage where the sprite is nearer; depth takes
        the sprite's where its coverage is at least one half."""
        zwin = self.depth[rows, cols]
        cover = alpha * (depth < zwin)
        win = self.rgb[:, rows, cols]
        win += (rgb - win) * cover
        np.copyto(zwin, depth, where=cover >= 0.5)


# ------------------------------------------------------------------------------------------ scene model


class _Draws:
    """Uniform numbers from one generator call, handed out one at a time. Scalar draws from a numpy Generator
    cost microseconds each; one batch per object is far cheaper and keeps the stream aligned whatever an
    object ends up drawing."""

    def __init__(self, rng: np.random.Generator, count: int = 48):
        self._values = rng.random(count).tolist()

    def uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * self._values.pop()

    def log_uniform(self, lo: float, hi: float) -> float:
        return math.exp(self.uniform(math.log(lo), math.log(hi)))

    def pick(self, options: tuple):
        return options[min(int(self.uniform() * len(options)), len(options) - 1)]

    def chance(self, p: float) -> bool:
        return self.uniform() < p


@dataclass
class _Camera:
    """Pinhole camera: x right, y down, z forward; level (the horizon is row cy) unless tilted down by `tilt`.
    Scenes are laid out in the level camera's coordinates and turned into the tilted one's (`from_level`)."""

    f: float  # focal length, pixels
    cx: float
    cy: float
    height: float  # above the floor, metres
    light: tuple[float, float, float]  # unit vector towards the key light
    tilt: float = 0.0  # downward rotation about the x axis, radians

    def from_level(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """A point or direction in the level camera's coordinates -> in this camera's."""
        cos, sin = math.cos(self.tilt), math.sin(self.tilt)
        return x, y * cos - z * sin, y * sin + z * cos

    def to_level(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """The inverse of `from_level`."""
        cos, sin = math.cos(self.tilt), math.sin(self.tilt)
        return x, y * cos + z * sin, z * cos - y * sin

    def rays(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Ray direction (rx, ry, 1) per pixel centre: rx (1,W), ry (H,1)."""
        rx = (np.arange(width, dtype=np.float32) + 0.5 - self.cx) / self.f
        ry = (np.arange(height, dtype=np.float32) + 0.5 - self.cy) / self.f
        return rx[None, :], ry[:, None]


@dataclass
class _Material:
    tile: int
    scale: float  # texels per pixel at 4 m seen head-on (texels per metre = scale * f / 4)
    colours: tuple[np.ndarray, np.ndarray]  # (3,) each: the texture blends colours[0] (t=0) to colours[1] (t=1)
    offset: tuple[float, float]  # texels


@dataclass
class _Plane:
    """A textured plane n . X = c in camera coordinates; its texture runs along tex_u, tex_v (unit vectors)."""

    normal: tuple[float, float, float]
    c: float
    tex_u: tuple[float, float, float]
    tex_v: tuple[float, float, float]
    material: _Material
    shade: float
    skyline: np.ndarray | None = None  # (2,K): position along tex_u (m) -> top height above the floor (m)


@dataclass
class _Shape:
    """An object facing the camera: centre (x, y) metres, z the depth of its centre plane (its front bulges
    nearer by up to half its width)."""

    kind: str  # "sphere" | "box" | "cylinder" | "blob" | "light"
    x: float
    y: float
    z: float
    width: float
    height: float
    material: _Material
    angle: float = 0.0  # image-plane rotation, radians
    slope: float = 0.0  # box depth change per metre to the right (a box turned about the vertical)
    gloss: float = 0.0  # specular strength
    grounded: bool = False
    harmonics: tuple[tuple[float, float], ...] = ()  # blob outline: (amplitude, phase) of harmonics 2, 3, ...


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return np.array(rgb, np.float32)


def _material(
    draws: _Draws,
    tiles: tuple[int, ...],
    scale: tuple[float, float],
    hue: float | None = None,
    sat: tuple[float, float] = (0.05, 0.8),
    val: tuple[float, float] = (0.25, 0.9),
) -> _Material:
    """A texture tile with two related colours (a dark and a light variant of one hue)."""
    tile = draws.pick(tiles)
    h = draws.uniform() if hue is None else hue + draws.uniform(-0.04, 0.04)
    s, v = draws.uniform(*sat), draws.uniform(*val)
    dark = _hsv(h, s, v * (1 - draws.uniform(0.2, 0.75)))
    light = _hsv(h + draws.uniform(-0.06, 0.06), s * draws.uniform(0.5, 1.1), v)
    return _Material(tile, draws.log_uniform(*scale), (dark, light), (draws.uniform(0, TILE), draws.uniform(0, TILE)))


def _camera(draws: _Draws, height: int, width: int) -> _Camera:
    light = np.array([draws.uniform(-0.8, 0.8), draws.uniform(-1.0, -0.3), draws.uniform(-1.0, -0.3)])
    lx, ly, lz = (light / np.linalg.norm(light)).tolist()
    return _Camera(
        f=draws.uniform(0.75, 1.15) * width,
        cx=width * draws.uniform(0.45, 0.55),
        cy=height * draws.uniform(0.28, 0.5),
        height=draws.uniform(1.1, 1.7),
        light=(lx, ly, lz),
    )


def _skyline(rng: np.random.Generator, stepped: bool) -> np.ndarray:
    """(2, K): positions along the backdrop (metres) and the height of its top above the floor (metres):
    rolling tree tops, or flat-topped buildings when `stepped`."""
    pos = np.cumsum(rng.uniform(0.5, 3.0, 48)) - 40.0
    top = rng.uniform(2.5, 6.0) + rng.uniform(0.3, 1.0) * rng.standard_normal(48).cumsum()
    if stepped:
        pos, top = np.repeat(pos, 2)[1:], np.repeat(top, 2)[:-1]
    return np.stack([pos, np.clip(top, 1.5, 12.0)])


def _turned(yaw: float) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Normal and in-plane horizontal direction of a back wall turned by `yaw` about the vertical."""
    return (math.sin(yaw), 0.0, math.cos(yaw)), (math.cos(yaw), 0.0, -math.sin(yaw))


def _outdoor_planes(draws: _Draws, rng: np.random.Generator, cam: _Camera) -> list[_Plane]:
    kind = draws.pick(("grass", "earth", "paving"))
    ground = {
        "grass": lambda: _material(draws, (NOISE[1], GRAIN), (2, 5), 0.27, (0.4, 0.7), (0.35, 0.6)),
        "earth": lambda: _material(draws, (NOISE[0], NOISE[1]), (2, 5), 0.09, (0.2, 0.45), (0.45, 0.8)),
        "paving": lambda: _material(draws, (CELLS, BRICKS), (1.5, 4), None, (0.0, 0.1), (0.4, 0.75)),
    }[kind]()
    stepped = draws.chance(0.4)
    backdrop = (
        _material(draws, (BRICKS, CELLS, CHECKER), (1.5, 5), None, (0.05, 0.4), (0.4, 0.8))
        if stepped
        else _material(draws, (NOISE[0], NOISE[1]), (2, 5), 0.3, (0.3, 0.7), (0.2, 0.5))
    )
    normal, along = _turned(draws.uniform(-0.3, 0.3))
    return [
        _Plane((0, 1, 0), cam.height, (1, 0, 0), (0, 0, 1), ground, draws.uniform(0.9, 1.0)),
        _Plane(
            normal, draws.uniform(6.5, 9.5), along, (0, 1, 0), backdrop, draws.uniform(0.7, 0.9), _skyline(rng, stepped)
        ),
    ]


def _indoor_planes(draws: _Draws, cam: _Camera) -> list[_Plane]:
    floor_tile = draws.pick((PLANKS, CHECKER, BRICKS, NOISE[0], NOISE[1], CELLS, GRAIN))
    wood = floor_tile in (PLANKS, GRAIN)
    floor = _material(draws, (floor_tile,), (1.5, 5), 0.08 if wood else None, (0.3, 0.7) if wood else (0.0, 0.5))
    wall = _material(
        draws, (NOISE[2], NOISE[3], STRIPES, BRICKS, MARBLE, DOTS), (1, 3), None, (0.05, 0.5), (0.55, 0.95)
    )
    normal, along = _turned(draws.uniform(-0.35, 0.35))
    planes = [
        _Plane((0, 1, 0), cam.height, (1, 0, 0), (0, 0, 1), floor, draws.uniform(0.85, 1.0)),
        _Plane(normal, draws.uniform(4.0, 9.0), along, (0, 1, 0), wall, draws.uniform(0.8, 0.95)),
    ]
    for side in (-1.0, 1.0):
        distance, shade = draws.uniform(1.3, 3.5), draws.uniform(0.6, 0.85)
        if draws.chance(0.6):
            planes.append(_Plane((side, 0, 0), distance, (0, 0, 1), (0, 1, 0), wall, shade))
    ceiling = _material(draws, (NOISE[3],), (1, 3), None, (0.0, 0.1), (0.7, 0.95))
    height, shade = draws.uniform(0.9, 1.6), draws.uniform(0.6, 0.8)
    if draws.chance(0.4):
        planes.append(_Plane((0, -1, 0), height, (1, 0, 0), (0, 0, 1), ceiling, shade))
    return planes


def _plane_depth(plane: _Plane, rx: np.ndarray, ry: np.ndarray, cam: _Camera) -> np.ndarray:
    """Depth where the rays hit the plane from the front, inf elsewhere and above a skyline; broadcastable to
    (H,W) (a floor depends on the row only)."""
    nx, ny, nz = plane.normal
    facing = (nx * rx if nx else 0.0) + (ny * ry if ny else 0.0) + nz
    depth = np.where(facing > 1e-6, plane.c / np.maximum(facing, 1e-6), np.float32(np.inf))
    if plane.skyline is not None:
        with np.errstate(invalid="ignore"):
            along = (rx * plane.tex_u[0] + plane.tex_u[2]) * depth
            top = cam.height - np.interp(np.where(np.isfinite(along), along, 0.0), *plane.skyline)
            depth = np.where(ry * depth >= top, depth, np.float32(np.inf))
    return depth.astype(np.float32)


def _paint_planes(canvas: Canvas, cam: _Camera, planes: list[_Plane]) -> None:
    """Each pixel takes the nearest plane in front of the camera, textured in world units; the texture's mip
    level follows the pixel footprint (distance and obliqueness), so far and grazing surfaces lose detail."""
    height, width = canvas.depth.shape
    rx, ry = cam.rays(height, width)
    depth = np.full((height, width), np.inf, np.float32)
    which = np.zeros((height, width), np.int8)
    for index, plane in enumerate(planes):
        d = _plane_depth(plane, rx, ry, cam)
        nearer = d < depth
        depth = np.where(nearer, d, depth)
        np.copyto(which, index, where=nearer)
    canvas.depth[:] = depth
    depth, which = depth.ravel(), np.where(np.isfinite(depth), which, -1).ravel()
    all_x, all_y = np.broadcast_to(rx, (height, width)).ravel(), np.broadcast_to(ry, (height, width)).ravel()
    rgb = canvas.rgb.reshape(3, -1)
    for index, plane in enumerate(planes):
        flat = np.flatnonzero(which == index)
        if not flat.size:
            continue
        d, px, py = depth[flat], all_x[flat], all_y[flat]
        world = (px * d, py * d, d)
        u = sum(a * w for a, w in zip(plane.tex_u, world) if a)
        v = sum(a * w for a, w in zip(plane.tex_v, world) if a)
        facing = np.abs(sum(n * w for n, w in zip(plane.normal, (px, py, 1.0)) if n))
        cosine = facing / np.sqrt(px * px + py * py + 1.0)
        mat = plane.material
        texels = mat.scale * cam.f / 4.0
        t = sample_texture(
            mat.tile,
            u * texels + mat.offset[0],
            v * texels + mat.offset[1],
            (mat.scale / 4.0) * d / np.maximum(cosine, 0.05),
        )
        # large, soft illumination changes (2 m features) so walls and floors are not flat
        light = plane.shade * (0.85 + 0.3 * sample_texture(NOISE[3], u * 16 + mat.offset[1], v * 16, 1.0))
        dark, bright = mat.colours
        for c in range(3):
            rgb[c, flat] = light * (dark[c] + (bright[c] - dark[c]) * t)


def _paint_sky(canvas: Canvas, cam: _Camera, draws: _Draws) -> np.ndarray:
    """Fill the empty pixels with a sky gradient and soft clouds at MAX_DEPTH; returns the horizon colour."""
    horizon = _hsv(draws.uniform(0.55, 0.62), draws.uniform(0.05, 0.2), draws.uniform(0.85, 1.0))
    zenith = _hsv(draws.uniform(0.56, 0.64), draws.uniform(0.3, 0.7), draws.uniform(0.6, 0.9))
    offset, cloudiness = (draws.uniform(0, TILE), draws.uniform(0, TILE)), draws.uniform(0.4, 0.7)
    height, width = canvas.depth.shape
    flat = np.flatnonzero(~np.isfinite(canvas.depth))
    if flat.size:
        rx, ry = cam.rays(height, width)
        px, py = rx[0, flat % width], ry[flat // width, 0]
        elevation = np.clip(py / -0.8, 0, 1)
        clouds = sample_texture(NOISE[3], px * 150 + offset[0], py * 400 + offset[1], 1.0)
        cover = np.clip((clouds - cloudiness) * 2.5, 0, 1)
        rgb = canvas.rgb.reshape(3, -1)
        for c in range(3):
            sky = horizon[c] + (zenith[c] - horizon[c]) * elevation
            rgb[c, flat] = sky + (0.97 - sky) * cover
        canvas.depth.reshape(-1)[flat] = MAX_DEPTH
    return horizon


def _object_material(draws: _Draws, foliage: bool = False) -> _Material:
    if foliage:
        return _material(
            draws, (NOISE[0], NOISE[1], GRAIN), (2.5, 6), draws.pick((0.08, 0.25, 0.3)), (0.4, 0.8), (0.25, 0.7)
        )
    return _material(draws, OBJECT_TEXTURES, (2.5, 6), None, (0.0, 0.85), (0.2, 0.95))


def _blob_outline(draws: _Draws) -> tuple[tuple[float, float], ...]:
    return tuple((draws.uniform(0, 0.3) / k, draws.uniform(0, 2 * math.pi)) for k in (2, 3, 4))


def _grounded(draws: _Draws, cam: _Camera, far: float, outdoor: bool) -> _Shape:
    """A shape standing on the floor at a log-uniform depth (many small far ones, a few large near ones)."""
    kind = draws.pick(("box", "box", "sphere", "cylinder", "blob"))
    z = draws.log_uniform(1.2, far)
    width = draws.log_uniform(0.2, 1.3)
    height = width if kind == "sphere" else width * draws.log_uniform(0.4, 3.0)
    half_room = 6.0 if outdoor else 3.5
    return _Shape(
        kind,
        x=draws.uniform(-half_room, half_room),
        y=cam.height - height / 2,
        z=z,
        width=width,
        height=height,
        material=_object_material(draws, foliage=kind == "blob" and draws.chance(0.5)),
        slope=draws.uniform(-0.8, 0.8) if kind == "box" else 0.0,
        gloss=draws.uniform(0.5, 1.0) if draws.chance(0.35) else 0.0,
        grounded=True,
        harmonics=_blob_outline(draws),
    )


def _floating(draws: _Draws, near: bool) -> _Shape:
    """A shape in the air anywhere in view: near "leaves" (foliage blobs at 0.9-2 m, often cut by the frame
    edge) or dead-leaves style shapes at any depth."""
    z = draws.uniform(0.9, 2.0) if near else draws.log_uniform(1.2, 8.0)
    kind = "blob" if near else draws.pick(("sphere", "blob", "box"))
    width = draws.uniform(0.15, 0.5) if near else draws.log_uniform(0.1, 0.8)
    # placed in normalised image coordinates so it lands in (or just outside) the frame
    x, y = draws.uniform(-0.6, 0.6) * z, draws.uniform(-0.6, 0.6) * z
    return _Shape(
        kind,
        x=x,
        y=y,
        z=z,
        width=width,
        height=width * draws.uniform(0.6, 1.6),
        material=_object_material(draws, foliage=near),
        angle=draws.uniform(0, math.pi),
        gloss=draws.uniform(0.6, 1.0) if kind == "sphere" else 0.0,
        harmonics=_blob_outline(draws),
    )


def _picture(draws: _Draws, wall: _Plane) -> _Shape:
    """A textured rectangle hanging flat on the (possibly turned) back wall."""
    x, y = draws.uniform(-2.5, 2.5), draws.uniform(-1.2, 0.2)
    nx, _, nz = wall.normal
    width = draws.uniform(0.3, 1.2)
    return _Shape(
        "box",
        x=x,
        y=y,
        z=(wall.c - nx * x) / nz - 0.03,
        width=width,
        height=width * draws.uniform(0.5, 1.5),
        material=_object_material(draws),
        slope=-nx / nz,
    )


def _light(draws: _Draws) -> _Shape:
    """A small bright emitter (bulb, fairy light, reflection) at a random depth: a bokeh highlight."""
    z = draws.log_uniform(1.5, 9.0)
    size = draws.uniform(0.03, 0.12)
    warm = _hsv(draws.uniform(0.05, 0.15), draws.uniform(0.0, 0.35), 1.0)
    glow = _Material(NOISE[3], 1.0, (warm, warm), (0.0, 0.0))
    return _Shape(
        "light",
        x=draws.uniform(-0.55, 0.55) * z,
        y=draws.uniform(-0.55, 0.3) * z,
        z=z,
        width=size,
        height=size,
        material=glow,
    )


def _shapes(rng: np.random.Generator, draws: _Draws, cam: _Camera, planes: list[_Plane], outdoor: bool) -> list[_Shape]:
    """All objects, sorted far to near."""
    back = planes[1]
    counts = (
        int(draws.uniform(10, 31)),
        int(draws.uniform(0, 10)),
        int(draws.uniform(1, 5)) if draws.chance(0.5) else 0,
        0 if outdoor else int(draws.uniform(0, 4)),
    )
    shapes = [_grounded(_Draws(rng), cam, back.c * 0.95, outdoor) for _ in range(counts[0])]
    shapes += [_floating(_Draws(rng), near=False) for _ in range(counts[1])]
    shapes += [_floating(_Draws(rng), near=True) for _ in range(counts[2])]
    shapes += [_picture(_Draws(rng), back) for _ in range(counts[3])]
    return sorted(shapes, key=lambda s: -s.z)


def _person(seed: int, cam: _Camera, outdoor: bool) -> list[_Shape]:
    """For PERSON_CHANCE of the scenes, a person standing 0.7-3 m away near the middle of the view: legs, torso and
    head (box, blob, ellipsoid) at one depth, from its own random stream. A portrait's background lies far behind
    its subject, so it gets the largest blur a photo has; scenes without a near subject taught models to under-blur
    portraits."""
    draws = _Draws(np.random.default_rng([seed, 3]), 48)
    if not draws.chance(PERSON_CHANCE[outdoor]):
        return []
    z, size = draws.log_uniform(0.7, 3.0), draws.uniform(0.85, 1.1)
    x = draws.uniform(-0.25, 0.25) * z
    legs, torso, head = 0.85 * size, 0.62 * size, 0.23 * size
    h, v = draws.uniform(0.03, 0.1), draws.uniform(0.35, 0.9)
    skin = _Material(NOISE[2], 3.0, (_hsv(h, 0.5, v * 0.7), _hsv(h, 0.4, v)), (0.0, 0.0))
    top = cam.height - legs - torso  # y of the shoulders (y down, the floor at cam.height)
    return [
        _Shape("box", x, cam.height - legs / 2, z + 0.02, 0.32 * size, legs, _object_material(draws), grounded=True),
        _Shape(
            "blob",
            x,
            top + torso / 2,
            z,
            draws.uniform(0.38, 0.5) * size,
            torso,
            _object_material(draws),
            harmonics=_blob_outline(draws),
        ),
        _Shape("sphere", x + draws.uniform(-0.03, 0.03), top - head * 0.45, z - 0.02, head * 0.8, head, skin),
    ]


def _window(
    cam: _Camera, shape: _Shape, size: tuple[int, int]
) -> tuple[slice, slice, float, float, float, float] | None:
    """Projected bounding box (clipped to the frame), centre and half size in pixels; None when off-frame.
    Rotated shapes, blobs (wavy outline) and lights (glow) get a box 1.5 times their half size."""
    if shape.z < 0.05:  # at or behind the camera (a tilted camera looks away from high, near things)
        return None
    uc, vc = cam.cx + cam.f * shape.x / shape.z, cam.cy + cam.f * shape.y / shape.z
    half_w = max(cam.f * shape.width / 2 / shape.z, 0.5)
    half_h = max(cam.f * shape.height / 2 / shape.z, 0.5)
    if shape.angle or shape.kind in ("blob", "light"):
        reach_w = reach_h = 1.5 * max(half_w, half_h) + 1
    else:
        reach_w, reach_h = half_w + 1, half_h + 1
    r0, r1 = max(int(vc - reach_h), 0), min(math.ceil(vc + reach_h), size[0])
    c0, c1 = max(int(uc - reach_w), 0), min(math.ceil(uc + reach_w), size[1])
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1), uc, vc, half_w, half_h


def _outline(shape: _Shape, x: np.ndarray, y: np.ndarray, half_w: float, half_h: float) -> np.ndarray:
    """Signed distance in pixels (negative inside) from normalised coordinates x, y (1 = the half size)."""
    if shape.kind in ("box", "cylinder"):
        return np.maximum((np.abs(x) - 1) * half_w, (np.abs(y) - 1) * half_h)
    rho = np.sqrt(x * x + y * y)
    if shape.kind == "blob":
        direction = (x + 1j * y) / np.maximum(rho, 1e-6)  # e^(i theta)
        power, radius = direction, 1.0
        for amplitude, phase in shape.harmonics:  # radius(theta) = 1 + sum a_k cos(k theta + phase_k)
            power = power * direction
            radius = radius + amplitude * (power * complex(math.cos(phase), math.sin(phase))).real
        rho = rho / radius
    return (rho - 1) * min(half_w, half_h)


def _relief(
    cam: _Camera, shape: _Shape, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray | float, np.ndarray | float, np.ndarray | None]:
    """Depth offset from z (metres, negative = nearer), Lambert shading and a Blinn-Phong specular term (None
    when matte) of the shape's visible surface; x, y are its normalised, rotated coordinates."""
    cos, sin = math.cos(shape.angle), math.sin(shape.angle)
    lx, ly, lz = cam.light
    lx, ly = lx * cos + ly * sin, ly * cos - lx * sin  # the light in the shape's rotated frame
    half_m = shape.width / 2
    if shape.kind == "box":
        norm = math.hypot(shape.slope, 1.0)
        lambert = max(0.0, (shape.slope * lx - lz) / norm)
        return shape.slope * half_m * x, 0.45 + 0.6 * lambert, None
    if shape.kind == "sphere":
        nz = np.sqrt(np.maximum(1 - x * x - y * y, 0))
        nx, ny, offset = x, y, -half_m * nz
    elif shape.kind == "cylinder":
        nz = np.sqrt(np.maximum(1 - x * x, 0))
        nx, ny, offset = x, 0.0, -half_m * nz
    else:  # blob: a flattened dome
        nz = np.sqrt(np.clip(1 - 0.8 * (x * x + y * y), 0.05, 1))
        norm = np.sqrt(0.25 * (x * x + y * y) + nz * nz)
        nx, ny, nz, offset = 0.5 * x / norm, 0.5 * y / norm, nz / norm, -0.3 * half_m * nz
    shade = 0.45 + 0.6 * np.maximum(nx * lx + ny * ly - nz * lz, 0)
    if not shape.gloss:
        return offset, shade, None
    hx, hy, hz = lx, ly, lz - 1.0  # half vector between the light and the viewer (0, 0, -1)
    hnorm = math.sqrt(hx * hx + hy * hy + hz * hz)
    spec = np.maximum((nx * hx + ny * hy - nz * hz) * (1 / hnorm), 0)
    for _ in range(5):  # ** 32, by squaring
        spec = spec * spec
    return offset, shade, shape.gloss * spec


def _paint_shadow(canvas: Canvas, cam: _Camera, shape: _Shape) -> None:
    """Soft contact shadow on the floor under a grounded shape, drawn before the shape itself: an ellipse
    flattened as the floor is seen (by the cosine of the view ray to the floor normal, camera height / distance)."""
    spread = shape.width * 1.3
    x, _, z = cam.to_level(shape.x, shape.y, shape.z)
    fx, fy, fz = cam.from_level(x, cam.height, z)
    squash = 0.6 * cam.height / math.sqrt(fx * fx + fy * fy + fz * fz)
    footprint = _Shape("sphere", fx, fy, fz, spread, spread * squash, shape.material)
    box = _window(cam, footprint, canvas.depth.shape)
    if box is None:
        return
    rows, cols, uc, vc, half_w, half_h = box
    y = ((np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5 - vc) / half_h)[:, None]
    x = ((np.arange(cols.start, cols.stop, dtype=np.float32) + 0.5 - uc) / half_w)[None, :]
    dark = 0.5 * np.maximum(1 - x * x - y * y, 0)
    behind = canvas.depth[rows, cols] > shape.z - shape.width
    canvas.rgb[:, rows, cols] *= 1 - dark * behind


def _paint_shape(canvas: Canvas, cam: _Camera, shape: _Shape) -> None:
    box = _window(cam, shape, canvas.depth.shape)
    if box is None:
        return
    rows, cols, uc, vc, half_w, half_h = box
    if shape.z - (1 + 1.5 * abs(shape.slope)) * shape.width / 2 >= canvas.depth[rows, cols].max():
        return  # wholly behind what is already drawn (e.g. outside the room)
    dv = (np.arange(rows.start, rows.stop, dtype=np.float32) + 0.5 - vc)[:, None]
    du = (np.arange(cols.start, cols.stop, dtype=np.float32) + 0.5 - uc)[None, :]
    cos, sin = math.cos(shape.angle), math.sin(shape.angle)
    if sin:
        x, y = (du * cos + dv * sin) / half_w, (dv * cos - du * sin) / half_h
    else:  # x (1,w) and y (h,1) broadcast: cheaper for the common upright shapes
        x, y = du / half_w, dv / half_h
    dark, bright = shape.material.colours
    if shape.kind == "light":  # a soft-edged glow, at least a pixel wide
        alpha = np.square(np.minimum(np.maximum(1.5 - np.sqrt(x * x + y * y), 0), 1))
        canvas.paint(rows, cols, alpha, shape.z, bright[:, None, None])
        return
    alpha = np.minimum(np.maximum(0.5 - _outline(shape, x, y, half_w, half_h), 0), 1)
    offset, shade, spec = _relief(cam, shape, x, y)
    mat = shape.material
    texels = mat.scale * cam.f / 4.0 * shape.z / cam.f  # texels per pixel
    t = sample_texture(mat.tile, du * texels + mat.offset[0], dv * texels + mat.offset[1], texels)
    rgb = (dark[:, None, None] + (bright - dark)[:, None, None] * t) * shade
    if spec is not None:
        rgb += spec
    canvas.paint(rows, cols, alpha, shape.z + offset, rgb)


def _atmosphere(canvas: Canvas, draws: _Draws, outdoor: bool, haze: np.ndarray) -> None:
    """Depth-dependent light: haze towards the horizon colour outdoors, light fall-off indoors."""
    far = np.clip((canvas.depth - 1.0) * (1 / (MAX_DEPTH - 1.0)), 0, 1)
    strength = draws.uniform(0.15, 0.45) if outdoor else draws.uniform(0.2, 0.5)
    if outdoor:
        canvas.rgb += (haze[:, None, None] - canvas.rgb) * (strength * far)
    else:
        canvas.rgb *= 1.0 - strength * np.sqrt(far)


def _indoor_option(seed: int, stream: int, chance: float, outdoor: bool) -> _Draws | None:
    """The draws of a scene option that `chance` of the indoor scenes take, None where it is not taken; from the
    seed's own stream `stream`, so the scene's other draws do not depend on it."""
    draws = _Draws(np.random.default_rng([seed, stream]), 2)
    return draws if draws.chance(chance) and not outdoor else None


def _close_up_scale(seed: int, outdoor: bool) -> float:
    """1, or for CLOSE_UP_CHANCE of the indoor scenes a log-uniform CLOSE_UP_SCALE factor."""
    draws = _indoor_option(seed, 1, CLOSE_UP_CHANCE, outdoor)
    return draws.log_uniform(*CLOSE_UP_SCALE) if draws else 1.0


def _scaled(
    scale: float, cam: _Camera, planes: list[_Plane], shapes: list[_Shape]
) -> tuple[_Camera, list[_Plane], list[_Shape]]:
    """The scene with every length times `scale` (camera height, plane distances, object positions and sizes).

    The projection alone is scale-free; what shows the scale in the image is what real close-ups show: a view
    from above far more often than a room (`_tilt`), haze and light fall-off that follow metres (texture density
    varies per scene, `_retextured`, so it tells nothing). The depth, and so the blur of a focal plane, scales with
    it: a desk photo gets the larger blur that a room photo does not."""
    if scale == 1.0:
        return cam, planes, shapes
    shapes = [
        replace(o, x=o.x * scale, y=o.y * scale, z=o.z * scale, width=o.width * scale, height=o.height * scale)
        for o in shapes
    ]
    return replace(cam, height=cam.height * scale), [replace(p, c=p.c * scale) for p in planes], shapes


def _tilt(seed: int, outdoor: bool, close_up: bool) -> float:
    """0, or for TILT_CHANCE[close_up] of the indoor scenes a TILT_RANGE downward tilt (radians).

    People look down at a desk or a tabletop and photograph a room level, so a view from above goes with a near
    scene far more often than with a room: a cue to the scene's scale, and so to its blur, that real photos give."""
    draws = _indoor_option(seed, 2, TILT_CHANCE[close_up], outdoor)
    return draws.uniform(*TILT_RANGE) if draws else 0.0


def _tilted(
    tilt: float, cam: _Camera, planes: list[_Plane], shapes: list[_Shape]
) -> tuple[_Camera, list[_Plane], list[_Shape]]:
    """The scene seen by the camera tilted down by `tilt` radians: planes and objects turned into its coordinates.

    Real desk and tabletop photos look down: the floor or table fills the frame and its depth rises steadily from
    the bottom row to the top, with no horizon; a level camera never shows that."""
    if tilt == 0.0:
        return cam, planes, shapes
    cam = replace(cam, tilt=tilt)
    planes = [
        replace(p, normal=cam.from_level(*p.normal), tex_u=cam.from_level(*p.tex_u), tex_v=cam.from_level(*p.tex_v))
        for p in planes
    ]
    shapes = [replace(o, **dict(zip("xyz", cam.from_level(o.x, o.y, o.z)))) for o in shapes]
    return cam, planes, shapes


def _texture_density(seed: int) -> float:
    """The scene's TEXTURE_DENSITY factor (log-uniform), from the seed's own stream 3."""
    return _Draws(np.random.default_rng([seed, 3]), 1).log_uniform(*TEXTURE_DENSITY)


def _retextured(factor: float, planes: list[_Plane], shapes: list[_Shape]) -> tuple[list[_Plane], list[_Shape]]:
    """The scene with every texture `factor` times denser (geometry unchanged).

    With one density per metre in every scene, how coarse the textures look tells a close-up from a room exactly;
    real photos never tell it that way (a tabletop's grain and a room's carpet look alike). Varying the density
    per scene keeps the networks from leaning on that cue (README, "What moved the numbers")."""
    planes = [replace(p, material=replace(p.material, scale=p.material.scale * factor)) for p in planes]
    return planes, [replace(o, material=replace(o.material, scale=o.material.scale * factor)) for o in shapes]


def synthetic_scene(seed: int, size: tuple[int, int] = (256, 256)) -> tuple[np.ndarray, np.ndarray]:
    """One procedural scene: image (H,W,3) uint8 sRGB and depth (H,W) float32 metres in about 0.25..10 (rooms
    from 1 m, close-ups nearer)."""
    return _scene(seed, size)[:2]


def _scene(seed: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, bool]:
    """(image, depth, whether the scene is outdoors): see `synthetic_scene`."""
    height, width = size
    rng = np.random.default_rng(seed)
    draws = _Draws(rng, 96)
    cam = _camera(draws, height, width)
    outdoor = draws.chance(0.35)
    planes = _outdoor_planes(draws, rng, cam) if outdoor else _indoor_planes(draws, cam)
    shapes = _shapes(rng, draws, cam, planes, outdoor)
    lights = [_light(_Draws(rng, 8)) for _ in range(int(draws.uniform(3, 12)))]
    scale = _close_up_scale(seed, outdoor)
    shapes = sorted(shapes + (_person(seed, cam, outdoor) if scale == 1.0 else []), key=lambda s: -s.z)
    cam, planes, shapes = _scaled(scale, cam, planes, shapes + lights)
    cam, planes, shapes = _tilted(_tilt(seed, outdoor, scale != 1.0), cam, planes, shapes)
    planes, shapes = _retextured(_texture_density(seed), planes, shapes)
    shapes, lights = shapes[: len(shapes) - len(lights)], shapes[len(shapes) - len(lights) :]
    canvas = Canvas(height, width)
    _paint_planes(canvas, cam, planes)
    haze = _paint_sky(canvas, cam, draws)
    for shape in shapes:
        if shape.grounded:
            _paint_shadow(canvas, cam, shape)
        _paint_shape(canvas, cam, shape)
    _atmosphere(canvas, draws, outdoor, haze)
    for light in lights:
        _paint_shape(canvas, cam, light)
    noise = rng.random((3, height, width), np.float32)  # sensor noise, uniform +-2.5 levels
    image = np.clip(canvas.rgb * 255.0 + noise * 5.0 - 2.0, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image.transpose(1, 2, 0)), np.minimum(canvas.depth, MAX_DEPTH), outdoor


class SyntheticSource(RGBDSource):
    """`num` procedural scenes of `size` (H,W); frame i is `synthetic_scene(seed + i)`, depth in metres.

    An outdoor scene's samples are rendered twice (`RGBDFrame.also_disparity`): from its metric depth, as a stereo
    camera or a lidar measures it, and from its depth read as relative disparity, as a monocular network gives it
    for a phone photo (the manifest's kind "disparity"), where the pipeline's per-frame normalisation makes the far
    background blur a lot. A user's outdoor photo may come with either, and nothing in the photo tells which; with
    both in training the network learns a blur between the two. (With disparity only, the v4 scenes, the portraits'
    blur was right and every room over-blurred; README, "What moved the numbers".)"""

    kind_name = "synthetic"

    def __init__(self, num: int, size: tuple[int, int] = (256, 256), seed: int = 0):
        if seed < 0:
            raise UserError(f"seed: must be 0 or more, got {seed}")
        if num < 1:
            raise UserError(f"num: must be at least 1, got {num}")
        if len(size) != 2 or min(size) < MIN_SIZE:
            raise UserError(f"size: must be (H,W) with both at least {MIN_SIZE}, got {size}")
        self.num, self.size, self.seed = int(num), (int(size[0]), int(size[1])), int(seed)

    def __len__(self) -> int:
        return self.num

    def _read(self, index: int) -> RGBDFrame:
        image, depth, outdoor = _scene(self.seed + index, self.size)
        return RGBDFrame(f"synthetic_{index:05d}", image, depth, kind="depth", also_disparity=outdoor)

    def attrs(self) -> dict:
        return {"source": self.kind_name, "num": self.num, "size": list(self.size), "seed": self.seed}
