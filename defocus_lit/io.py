"""Files in and out: photos, depth maps and masks read with clear errors (numpy, (H,W,3) uint8 sRGB for colour
and (H,W) for single-channel maps), the one atomic write every output of the package goes through (a full disk
there is DiskFull naming the output), the file HDF5 writes through, and the lock of a folder one process owns.

Photos and masks come in every PIL mode users have: a photo in CMYK (converted through its ICC profile when it has
one), palette, 16-bit or with alpha becomes (H,W,3) uint8 once, here; a mask in any mode (1-bit, palette, grey,
grey + alpha, RGB(A), 16-bit) becomes grey 0..255 on one scale (1-bit white = 255, 16-bit white = 65535 -> 255),
transparent pixels counting as white. Depth maps keep their own values (`read_gray`)."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from defocus_lit.errors import DiskFull, UserError, disk_full, warn

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # PIL's modes for 16-bit (and 32-bit int) grey


ImageSource = str | os.PathLike | Image.Image | np.ndarray  # a file, or an image in memory (the Python API's)


def source_name(source: ImageSource) -> str:
    """How errors name an image: its path, or what it is for one in memory."""
    if isinstance(source, Image.Image):
        return f"the {source.width}x{source.height} PIL image"
    if isinstance(source, np.ndarray):
        return f"the {'x'.join(map(str, source.shape))} {source.dtype} array"
    return str(source)


def _open(source: ImageSource) -> Image.Image:
    """A PIL image of a file (UserError naming it when missing or unreadable), a PIL image or an array (H,W),
    (H,W,3) or (H,W,4) of 8- or 16-bit integers, or floats in [0,1]."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    path = Path(source)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable image ({err})") from None
    return img


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype.kind == "f":
        array = np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)
    if array.dtype == np.uint16 and array.ndim == 2:
        array = array.astype(np.int32)  # PIL's 16-bit grey mode "I"
    try:
        return Image.fromarray(array)
    except (TypeError, ValueError) as err:
        raise UserError(f"{source_name(array)}: not an image (want H x W, H x W x 3 or 4; {err})") from None


def _grey8(img: Image.Image) -> Image.Image:
    """16-bit (or 32-bit int) and float grey scaled to an 8-bit "L" image; other modes unchanged."""
    if img.mode in SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64) / 257.0
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = arr * 255.0 if arr.max(initial=0) <= 1.0 else arr
    else:
        return img
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def _over_white(img: Image.Image) -> Image.Image:
    """An image with transparency (alpha band or palette transparency) composited over white, as RGB."""
    if "A" not in img.getbands() and "transparency" not in img.info:
        return img
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def _cmyk_to_rgb(img: Image.Image, path: str) -> Image.Image:
    """CMYK through the file's ICC profile to sRGB (PIL's own conversion, which ignores the ink, without one)."""
    icc = img.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError) as err:
            warn(f"{path}: its CMYK colour profile cannot be used ({err}); converting without it")
    return img.convert("RGB")


def read_rgb(path: ImageSource) -> np.ndarray:
    """(H,W,3) uint8, EXIF orientation applied: RGB as stored; CMYK to sRGB (via its ICC profile), palette and
    grey to RGB, 16-bit scaled to 8, transparency composited over white."""
    img = ImageOps.exif_transpose(_open(path))
    if img.mode == "CMYK":
        img = _cmyk_to_rgb(img, source_name(path))
    img = _over_white(_grey8(img))
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """(H,W) array of the file's own values: uint16 for 16-bit PNGs, uint8 otherwise.
    A colour file (e.g. a disparity JPEG saved with three equal channels) gives its first channel."""
    img = ImageOps.exif_transpose(_open(path))  # a rotated phone mask lines up with its photo
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype == np.int32:  # PIL opens 16-bit PNGs as mode "I"
        arr = arr.astype(np.uint16) if arr.max(initial=0) < 65536 else arr
    return arr.copy()


def read_mask_grey(path: ImageSource) -> np.ndarray:
    """(H,W) uint8 grey 0..255 of a mask in any PIL mode, on one scale: 1-bit and palette through their colours,
    16-bit divided by 257, colour by luminance, transparent pixels as white (not in focus)."""
    img = ImageOps.exif_transpose(_open(path))  # a rotated phone mask lines up with its photo
    img = _over_white(_grey8(img))
    return np.asarray(img.convert("L"), dtype=np.uint8).copy()


def file_digest(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes (hex): the same photo under any name or in any folder."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha1").hexdigest()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def ensure_folder(folder: str | os.PathLike) -> Path:
    """`folder`, created with its parents if needed; UserError naming it when it cannot be (a file in the way,
    no permission, a read-only disk)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{folder}: cannot create this folder ({err.strerror or err})") from None
    return folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


_TEMPORARY = re.compile(r"^\..+\.([^.]+)\.(\d+)\.(tmp|old)$")  # .NAME.HOST.PID.tmp, what atomic_path writes
_swept: set[Path] = set()


def _host() -> str:
    """This machine's short name as it appears in temporary names (the process id alone means nothing to another
    machine sharing the folder, e.g. the nodes of a cluster)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0]) or "host"


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporaries (`.NAME.HOST.PID.tmp`, `.old`) in `folder` that processes of this machine which no
    longer run left behind (killed with SIGKILL, say); once per folder and process, so a folder of outputs is not
    rescanned for every file. Another machine's temporaries are left alone."""
    folder = folder.resolve()
    if folder in _swept or not folder.is_dir():
        return []
    _swept.add(folder)
    removed = []
    for candidate in folder.iterdir():
        match = _TEMPORARY.match(candidate.name)
        if not match or match.group(1) != _host():
            continue
        pid = int(match.group(2))
        if pid != os.getpid() and not _pid_alive(pid):
            _remove(candidate)
            removed.append(candidate)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike, *, folder: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` (`.NAME.HOST.PID.tmp`, an empty folder when `folder`) to write to; renamed over
    `path` when the block completes. On any error or interrupt it is removed and `path` is left as it was, so a
    reader never sees a half-written file, and two processes writing `path` at once leave one complete file. An
    existing folder at `path` is replaced as a whole. Temporaries of earlier processes that were killed before they
    could clean up are removed first; a parent folder that cannot be created is a UserError naming it, and a full
    disk or quota (in any write of the block, nested atomic writes into the folder included) is DiskFull naming
    `path`."""
    path = Path(path)
    ensure_folder(path.parent)
    remove_stale_temporaries(path.parent)
    tmp = path.with_name(f".{path.name}.{_host()}.{os.getpid()}.tmp")
    _remove(tmp)
    try:
        if folder:
            tmp.mkdir()
        yield tmp
        if folder and path.is_dir():
            old = path.with_name(f".{path.name}.{_host()}.{os.getpid()}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except Exception as err:
        if disk_full(err):
            raise DiskFull(path) from None
        raise
    finally:
        _remove(tmp)


class WriteErrorsKept:
    """A file open for reading and writing (the file-object interface h5py takes) whose failed writes are kept,
    not raised: a write that fails (a full disk) is reported as done and every later one dropped, until `check()`
    or the end of `keeping_write_errors` raises the first failure.

    For HDF5: it crashes with a segmentation fault when it closes a file after one of its writes failed (h5py
    issue #914), so it must never see the failure; the writer checks between its writes and stops."""

    def __init__(self, file: io.FileIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        try:
            done = 0
            while self.error is None and done < len(view):  # a raw write may write less than asked
                done += self.file.write(view[done:])
        except OSError as err:
            self.error = err
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        try:
            if self.error is None:
                return self.file.truncate(size)
        except OSError as err:
            self.error = err
        return self.tell() if size is None else size

    def flush(self) -> None:
        """Nothing to do: writes are unbuffered."""

    def check(self) -> None:
        """Raise the first failed write, if any."""
        if self.error is not None:
            raise self.error


@contextmanager
def keeping_write_errors(path: str | os.PathLike) -> Iterator[WriteErrorsKept]:
    """`path` opened (created or emptied) as `WriteErrorsKept`; closed at the end of the block, which then raises
    the first failed write, also in place of an error that failure caused later (HDF5 reading back what it could
    not write)."""
    with open(path, "w+b", buffering=0) as raw:
        file = WriteErrorsKept(raw)
        try:
            yield file
        except Exception:
            file.check()
            raise
    file.check()


@contextmanager
def folder_lock(folder: Path, remedy: str) -> Iterator[None]:
    """Hold `folder/.lock` for the block: UserError naming the process that holds it (and `remedy`) when another
    does. An advisory `flock`, which the kernel releases when its process ends, however it ends, so a killed process
    leaves no stale lock. The file itself stays: removed, a process that had just opened it could lock the removed
    file while another locks a new one. On a file system without locks (a network mount without them) the block
    runs unlocked."""
    with open(os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644), "r+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = file.read().strip() or "another process"
            raise UserError(f"{folder}: in use by {holder}; {remedy}") from None
        except OSError:  # no locking on this file system
            pass
        else:
            file.truncate()
            file.write(f"pid {os.getpid()} on host {_host()}\n")
            file.flush()
        yield  # closing the file releases the lock


def write_rgb(path: str | os.PathLike, image: np.ndarray, icc_profile: bytes | None = None) -> None:
    """Write (H,W,3) uint8 (or (H,W) uint8 grey, e.g. a mask) as PNG or JPEG by extension, atomically."""
    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: output must end in .png, .jpg or .jpeg")
    extra = {"quality": 95} if fmt == "JPEG" else {}
    if icc_profile:
        extra["icc_profile"] = icc_profile
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=fmt, **extra)


def read_mask(path: ImageSource, mask_kind: str = "binary") -> np.ndarray:
    """(H,W) float32 in [0,1], 0 = keep sharp: a mask (any mode, see `read_mask_grey`) thresholded at 128 to 0/1,
    or for a patch checkpoint snapped to the nearest of 0/128/255 -> 0/0.5/1. UserError if no pixel stays sharp; a
    warning if every pixel does (the output will be the input)."""
    grey = read_mask_grey(path).astype(np.float32)
    if mask_kind == "patch":
        mask, sharp = np.select([grey < 64, grey < 192], [0.0, 0.5], 1.0).astype(np.float32), "< 64"
    else:
        mask, sharp = (grey >= 128).astype(np.float32), "< 128"
    if not (mask == 0).any():
        raise UserError(
            f"{source_name(path)}: the mask has no in-focus pixel (black, value {sharp}, marks what stays sharp)"
        )
    warn_if_all_in_focus(mask == 0, source_name(path))
    return mask


def warn_if_all_in_focus(in_focus: np.ndarray, path: str | os.PathLike) -> None:
    if in_focus.all():
        warn(f"{path}: every pixel of the mask is in focus (black), so nothing will be blurred; white marks blur")


def icc_profile(path: str | os.PathLike) -> bytes | None:
    """The file's embedded ICC colour profile when it describes RGB pixels (kept in the output so colours look the
    same); None for a CMYK or grey profile, whose file `read_rgb` converts to sRGB: such a profile would not
    describe the output's pixels."""
    with Image.open(path) as img:
        icc = img.info.get("icc_profile")
    return icc if icc and icc[16:20] == b"RGB " else None
