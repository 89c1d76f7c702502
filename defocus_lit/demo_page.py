"""The demo page (`defocus-lit demo`): portrait mode in the browser. A local Gradio page that loads a trained
checkpoint; the user uploads a photo, paints what stays sharp (or uploads a mask file), runs, compares before/after
with a slider and downloads the full-resolution PNG.

The page calls `models.inference.defocus_array`, the function `defocus-lit predict` uses, with the same working size
(`--max-side`), so the page and the command give the same pixels for the same photo and mask. For a checkpoint
trained with the amount input, a slider sets the amount of blur (`--amount` in predict: the mean blur radius out of
focus in percent of the photo's long side). Whenever the photo or the mask changes it moves to the model's guess for
them (shown as a number); left there, Run gives the model's own output (predict without `--amount`), moved, the
model is told the slider's amount.

Painting: the editor returns the photo and the painted layers (RGBA). A pixel is painted where a layer's alpha is
>= 128 (the brush's soft edge below that counts as unpainted); unpainted pixels are blurred. For a binary-mask
checkpoint every painted pixel stays sharp; for a patch-mask checkpoint each painted pixel takes the level of the
nearest of the three brush colours (sharp 0 / middle 0.5 / far 1), later layers over earlier ones.

Everything bad the user can do on the page (no photo, nothing painted, an unreadable mask file, a mask of another
size, a photo above `--max-megapixels`) raises `UserError`, shown as a message box on the page; any other
exception is logged with its traceback on the server's console and shown as a one-line message. The server keeps
serving either way.

The page binds to 127.0.0.1 unless `--host` says otherwise; it has no login.

`build_page` only builds the Blocks (tests call it, and the handlers `mask_from_layers` / `process` directly);
`launch` serves it. Gradio is imported lazily (`import_gradio`) so that the package works without the `demo` extra.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image

from defocus_lit.api import Model, load_model
from defocus_lit.errors import UserError
from defocus_lit.models.inference import MAX_SIDE, array_tensors, defocus_array, guessed_amount
from defocus_lit.select import BACKGROUND, SUBJECT, UNKNOWN, select_subject

if TYPE_CHECKING:  # pragma: no cover
    import gradio as gr

log = logging.getLogger("defocus_lit.demo")

MAX_MEGAPIXELS = 16.0  # default photo limit: a 12 MP phone photo (4032x3024) fits
MAX_UPLOAD = "100mb"  # Gradio rejects larger uploads before they reach the handler
PAINTED_ALPHA = 128  # a layer pixel counts as painted from this alpha on
BRUSH_OPACITY = 0.65  # the photo shows through the paint; still above PAINTED_ALPHA
AMOUNT_STEP = 0.05  # the amount slider's step, percent of the long side; also its least value

# (name, colour, mask value): the brushes; binary checkpoints get "sharp" and "not subject". With snapping on, the
# sharp strokes are surely the subject and every other brush's surely not (`defocus_lit.select`)
BRUSHES: tuple[tuple[str, str, float], ...] = (
    ("sharp", "#22c55e", 0.0),
    ("middle", "#f59e0b", 0.5),
    ("far", "#3b82f6", 1.0),
    ("not subject", "#ef4444", 1.0),
)
SHARP, NOT_SUBJECT = 0, 3  # indices into BRUSHES

Progress = Callable[[float, str], None]


@dataclass
class DemoModel(Model):
    """The page's model: the Python API's `Model` and the largest photo the page takes (`--max-megapixels`)."""

    max_megapixels: float = MAX_MEGAPIXELS

    @classmethod
    def load(
        cls,
        ckpt: str | Path,
        device: str = "auto",
        max_side: int | None = None,
        max_megapixels: float = MAX_MEGAPIXELS,
    ) -> DemoModel:
        model = load_model(ckpt, device, MAX_SIDE if max_side is None else max_side)
        return cls(**{field.name: getattr(model, field.name) for field in fields(Model)}, max_megapixels=max_megapixels)

    @property
    def takes_amount(self) -> bool:
        """Whether the model can be told an amount: trained with the amount input, with a blur head."""
        return self.defocuser.amount_input and self.defocuser.head is not None

    @property
    def amount_span(self) -> tuple[float, float]:
        """The slider's span (percent of the long side): up to the most the blur head draws on a photo of
        `max_side` px or more (its top radius; a smaller photo takes a little more, `--amount` in predict)."""
        top = max(self.defocuser.head.radii) if self.defocuser.head is not None else 0.0
        steps = math.floor(100 * top / (self.max_side or MAX_SIDE) / AMOUNT_STEP + 1e-6)
        return AMOUNT_STEP, max(1, steps) * AMOUNT_STEP

    def brushes(self) -> tuple[tuple[str, str, float], ...]:
        return BRUSHES if self.mask_kind == "patch" else (BRUSHES[SHARP], BRUSHES[NOT_SUBJECT])

    def describe(self) -> str:
        return f"arch {self.cfg.arch}, {self.mask_kind} mask, {self.device.type}"


def import_gradio() -> Any:
    """gradio, with its analytics and version check off (the page must not phone home)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise UserError("gradio is not installed: pip install -e '.[demo]' (or `make install`)") from None
    return gradio


# ----- handlers (no Gradio here: unit-tested directly) --------------------------------------------------------
def to_array(image: Any, what: str) -> np.ndarray:
    """An image as the editor hands it over (numpy array, PIL image or file path) -> a numpy array, UserError
    if it cannot be read."""
    if isinstance(image, np.ndarray):
        return image
    if isinstance(image, Image.Image):
        return np.asarray(image)
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as img:
                return np.asarray(img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise UserError(f"{what}: not a readable image ({err})") from None
    raise UserError(f"{what}: not an image ({type(image).__name__})")


def photo_rgb(photo: Any, max_megapixels: float) -> np.ndarray:
    """The editor's background -> (H,W,3) uint8, checked against the size limit. Transparent pixels (a PNG with
    alpha) are composited on white, as the browser shows them."""
    if photo is None:
        raise UserError("no photo: upload one (drop it on the editor or click it) first")
    arr = to_array(photo, "photo")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) == 0:
        raise UserError(f"photo: an image of shape {arr.shape} cannot be used (want height x width x RGB)")
    h, w = arr.shape[:2]
    if h * w > max_megapixels * 1e6:
        raise UserError(
            f"the photo is {w}x{h} = {h * w / 1e6:.1f} MP; this page takes at most "
            f"{max_megapixels:g} MP (shrink it, or restart the demo with a larger --max-megapixels)"
        )
    if arr.shape[2] == 4:
        alpha = arr[..., 3:].astype(np.float32) / 255
        arr = (arr[..., :3] * alpha + 255 * (1 - alpha)).round()
    return arr[..., :3].astype(np.uint8)


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)


def brush_labels(layers: Sequence[Any], shape: tuple[int, int]) -> np.ndarray:
    """Painted editor layers (RGBA, any size: scaled to the photo's `shape`) -> (H,W) int8: for each painted pixel
    the index of the nearest brush colour in BRUSHES (later layers over earlier ones), -1 where unpainted. A pixel
    is painted where a layer's alpha is >= PAINTED_ALPHA (the brush's soft edge below that is not)."""
    h, w = shape
    labels = np.full((h, w), -1, np.int8)
    palette = np.array([_hex_rgb(c) for _, c, _ in BRUSHES], np.float32)
    for layer in layers or []:
        if layer is None:
            continue
        arr = to_array(layer, "painted layer")
        if arr.ndim == 2:  # a grey layer without alpha: anything non-black is paint
            arr = np.stack([arr] * 3 + [np.where(arr > 0, 255, 0).astype(np.uint8)], axis=2)
        elif arr.shape[2] == 3:
            arr = np.concatenate([arr, np.where(arr.any(axis=2, keepdims=True), 255, 0).astype(np.uint8)], axis=2)
        if arr.shape[:2] != (h, w):  # the editor may work on a scaled canvas: nearest keeps colours exact
            arr = np.asarray(
                Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8))).resize((w, h), Image.Resampling.NEAREST)
            )
        painted = arr[..., 3] >= PAINTED_ALPHA
        rgb = arr[painted][:, :3].astype(np.float32)
        labels[painted] = ((rgb[:, None, :] - palette[None]) ** 2).sum(axis=2).argmin(axis=1)
    return labels


def mask_from_layers(
    layers: Sequence[Any], shape: tuple[int, int], mask_kind: str, snap_to: np.ndarray | None = None
) -> np.ndarray:
    """Painted editor layers -> (H,W) float32 mask, 0 = keep sharp (`brush_labels`).

    Unpainted pixels are 1 (blurred), and so are the "not subject" brush's. Binary: every other painted pixel is 0.
    Patch: painted pixels take their brush's value (sharp 0, middle 0.5, far 1). `snap_to` (the photo (H,W,3)
    uint8): the sharp area is the subject selected from the strokes instead (`defocus_lit.select`: sharp strokes
    are surely subject, every other brush's surely not), so it follows the subject's outline; middle and far stay
    as brushed. UserError if nothing is painted or nothing is marked sharp."""
    labels = brush_labels(layers, shape)
    painted = labels >= 0
    if not painted.any():
        raise UserError("nothing is painted: paint what stays sharp with the brush, or upload a mask file")
    values = np.array([v for _, _, v in BRUSHES], np.float32)
    if mask_kind == "patch":
        mask = np.where(painted, values[labels], 1.0).astype(np.float32)
    else:
        mask = np.where(painted & (labels != NOT_SUBJECT), 0.0, 1.0).astype(np.float32)
    if snap_to is not None and (labels == SHARP).any():
        strokes = np.where(labels == SHARP, SUBJECT, np.where(painted, BACKGROUND, UNKNOWN)).astype(np.int8)
        subject = snapped_subject(snap_to, strokes)
        mask = np.where(subject, 0.0, np.where(mask == 0, 1.0, mask)).astype(np.float32)
    if not (mask == 0).any():
        raise UserError(
            "nothing is marked sharp: paint the subject with the 'sharp' brush "
            f"({BRUSHES[SHARP][1]}); the other brushes only grade the blur or mark what is not the subject"
        )
    return mask


_LAST_SELECTION: dict[bytes, np.ndarray] = {}  # one entry: the preview's selection, which Run then reuses


def snapped_subject(photo: np.ndarray, strokes: np.ndarray) -> np.ndarray:
    """`select_subject(photo, None, strokes)`, remembered for the last photo and strokes: the page selects on every
    change to show the selection, and Run, with the same input, takes that selection instead of a second GrabCut."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (photo, strokes):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array))
    key = digest.digest()
    if key not in _LAST_SELECTION:
        _LAST_SELECTION.clear()
        _LAST_SELECTION[key] = select_subject(photo, None, strokes)
    return _LAST_SELECTION[key].copy()


def selection_preview(photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What stays sharp, shown over the photo (H,W,3) uint8: the rest dimmed, the sharp area's outline green."""
    sharp = mask == 0
    preview = np.where(sharp[..., None], photo, (photo * 0.35).astype(np.uint8))
    edge = sharp & ~cv2.erode(sharp.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    preview[cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)] = _hex_rgb(BRUSHES[SHARP][1])
    return preview


def mask_from_file(path: str | os.PathLike, shape: tuple[int, int], mask_kind: str) -> np.ndarray:
    """An uploaded mask file, read as `predict` reads it (black = sharp), checked to be the photo's size."""
    from defocus_lit.io import read_mask

    name = Path(path).name
    try:
        mask = read_mask(path, mask_kind)
    except UserError as err:  # the temporary upload path means nothing to the user: name the file only
        raise UserError(f"mask file {name}: {str(err).split(': ', 1)[-1]}") from None
    if mask.shape != tuple(shape):
        (mh, mw), (h, w) = mask.shape, shape
        raise UserError(f"mask file {name} is {mw}x{mh} but the photo is {w}x{h}")
    return mask


def photo_and_mask(
    demo_model: DemoModel, editor: dict | None, mask_file: str | None, snap: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The photo (H,W,3) uint8 and its mask (H,W) float32 (0 = keep sharp) from the editor's value
    ({"background", "layers", "composite"}), its sharp strokes snapped to the subject's outline with `snap`, or,
    taking precedence over the painting, an uploaded `mask_file`. Raises UserError for bad input."""
    photo = photo_rgb((editor or {}).get("background"), demo_model.max_megapixels)
    shape = photo.shape[:2]
    if mask_file:
        return photo, mask_from_file(mask_file, shape, demo_model.mask_kind)
    layers = (editor or {}).get("layers") or []
    return photo, mask_from_layers(layers, shape, demo_model.mask_kind, photo if snap else None)


def guess(demo_model: DemoModel, photo: np.ndarray, mask: np.ndarray) -> float:
    """The amount of blur (percent of the long side) the model guesses for the photo and mask: the slider's value
    until the user moves it."""
    image, mask_tensor = array_tensors(photo, mask, demo_model.device)
    return float(guessed_amount(demo_model.defocuser, image, mask_tensor, demo_model.max_side)[0])


def process(
    demo_model: DemoModel,
    editor: dict | None,
    mask_file: str | None = None,
    amount: float | None = None,
    progress: Progress | None = None,
    snap: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The Run button: (photo, defocused) as (H,W,3) uint8 at the photo's full resolution.

    `editor`, `mask_file` and `snap` as in `photo_and_mask`; `amount` is the slider's once the user moved it (None:
    the model guesses, as predict without --amount). Raises UserError for bad input."""
    report = progress or (lambda fraction, desc: None)
    report(0.0, "selecting the subject" if snap and not mask_file else "reading the photo")
    photo, mask = photo_and_mask(demo_model, editor, mask_file, snap)
    report(0.2, f"defocusing {photo.shape[1]}x{photo.shape[0]} on {demo_model.device.type}")
    result = defocus_array(demo_model.defocuser, photo, mask, demo_model.device, demo_model.max_side, amount=amount)
    report(0.9, "writing the PNG")
    return photo, result


# ----- the page -----------------------------------------------------------------------------------------------
def _instructions(demo_model: DemoModel) -> str:
    ckpt = f"`{demo_model.path.name}` ({demo_model.describe()})"
    if demo_model.mask_kind == "patch":
        paint = (
            "This checkpoint wants a **3-level patch mask**: paint the subject with the **sharp** brush "
            "(green), optionally what should blur a little with **middle** (amber) and the far background "
            "with **far** (blue). Unpainted areas count as far."
        )
    else:
        paint = (
            "This checkpoint wants a **binary mask**: paint what stays **sharp** with the brush; everything "
            "unpainted is blurred."
        )
    paint += (
        " With **snap to edges** on, a few sharp strokes on the subject are enough: the selection grows to its "
        "outline (shown under the result); mark what it wrongly takes with **not subject** (red)."
    )
    amount = (
        " The **amount of blur** slider then shows the model's guess for them; drag it for more or less blur."
        if demo_model.takes_amount
        else ""
    )
    return (
        f"## Portrait mode\nCheckpoint {ckpt}.\n\n1. Upload a photo (up to {demo_model.max_megapixels:g} MP).\n"
        f"2. {paint} Or upload a mask file instead (black = sharp, the photo's size).{amount}\n3. **Run**, then drag "
        "the handle to compare, and download the full-resolution PNG."
    )


AMOUNT_INFO = (
    "the mean blur radius outside the sharp area, in % of the photo's long side (3 = 30 px on a 1000-px photo)"
)


def guess_note(amount: float) -> str:
    return f"The model's guess for this photo and mask: **{amount:.2f} %** of the long side."


def make_change_handler(demo_model: DemoModel) -> Callable[..., tuple[Any, Any, bool, Any]]:
    """The handler run whenever the photo, the painting, the mask file or snapping changes: (the amount slider's
    new value: the model's guess for the photo and mask, the note under it, "moved by the user" False, the preview
    of what stays sharp). Until there is a photo and a sharp area it leaves the slider and preview as they are and
    says what is missing."""
    gr = import_gradio()

    def on_change(editor: dict | None, mask_file: str | None, snap: bool = False) -> tuple[Any, Any, bool, Any]:
        try:
            photo, mask = photo_and_mask(demo_model, editor, mask_file, snap)
        except UserError as err:
            return gr.update(), f"The model's guess appears once there is {_missing(err)}.", False, gr.update()
        preview = selection_preview(photo, mask)
        if not demo_model.takes_amount:
            return gr.update(), "", False, preview
        amount = guess(demo_model, photo, mask)
        low, high = demo_model.amount_span
        return gr.update(value=min(max(round(amount, 2), low), high)), guess_note(amount), False, preview

    return on_change


def _missing(err: UserError) -> str:
    return "a photo" if str(err).startswith("no photo") else "a photo and a sharp area"


def make_run_handler(demo_model: DemoModel, output_dir: Path) -> Callable[..., tuple[Any, Any]]:
    """The Run button's Gradio handler: `process` (told the slider's amount once the user `moved` it, else the
    model's guess; the sharp strokes snapped to the subject with `snap`), the full-resolution PNG written under
    `output_dir`, errors turned into a message box on the page
    (`gr.Error`) instead of a stack trace."""
    gr = import_gradio()

    track = gr.Progress()  # a gr.Progress default makes Gradio pass the page's progress bar

    def on_run(
        editor: dict | None,
        mask_file: str | None,
        amount: float | None,
        moved: bool,
        snap: bool = False,
        progress: Any = track,
    ) -> tuple[Any, Any]:
        # (annotations stay plain: Gradio evaluates them, and `gr` is not a module-level name here)
        from defocus_lit.io import write_rgb

        try:
            told = float(amount) if moved and demo_model.takes_amount else None
            report = lambda fraction, desc: progress(fraction, desc=desc)  # noqa: E731
            photo, result = process(demo_model, editor, mask_file, told, report, snap)
            out = output_dir / uuid.uuid4().hex / "defocused.png"
            write_rgb(out, result)
        except UserError as err:
            print(f"demo: refused: {err}", file=sys.stderr)
            raise gr.Error(str(err), title="Cannot run", print_exception=False) from None
        except Exception as err:  # never a stack trace on the page; the server keeps serving
            log.exception("demo: unexpected error")
            raise gr.Error(
                f"unexpected error ({type(err).__name__}: {str(err)[:200]}); details are in the server's console",
                title="Error",
                print_exception=False,
            ) from None
        return (photo, str(out)), gr.DownloadButton(value=str(out), visible=True)

    return on_run


def build_page(demo_model: DemoModel, examples: Sequence[Path] = (), output_dir: Path | None = None) -> gr.Blocks:
    """The page's Blocks, not launched. Results are written under `output_dir` (default: a temporary folder
    removed when the process exits)."""
    gr = import_gradio()
    if output_dir is None:
        output_dir = Path(tempfile.mkdtemp(prefix="defocus-demo-"))
        atexit.register(shutil.rmtree, output_dir, ignore_errors=True)
    brushes = demo_model.brushes()
    # local fonts only: the default theme would fetch a Google font
    theme = gr.themes.Default(
        font=[gr.themes.utils.fonts.LocalFont("IBM Plex Sans"), "ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=[gr.themes.utils.fonts.LocalFont("IBM Plex Mono"), "ui-monospace", "monospace"],
    )

    on_run = make_run_handler(demo_model, output_dir)
    on_change = make_change_handler(demo_model)

    with gr.Blocks(title="defocus_lit: portrait mode", theme=theme, analytics_enabled=False) as page:
        gr.Markdown(_instructions(demo_model), elem_id="instructions")
        with gr.Row(equal_height=False):
            with gr.Column():
                editor = gr.ImageEditor(
                    label="Photo: upload, then paint what stays sharp",
                    type="numpy",
                    image_mode="RGBA",
                    sources=("upload", "clipboard"),
                    transforms=(),
                    layers=False,
                    format="png",
                    brush=gr.Brush(
                        colors=[(c, BRUSH_OPACITY) for _, c, _ in brushes],
                        default_color=(brushes[0][1], BRUSH_OPACITY),
                        color_mode="fixed",
                    ),
                    eraser=gr.Eraser(),
                    elem_id="photo",
                    height=520,
                )
                gr.Markdown(
                    " · ".join(f"<span style='color:{c}'>&#9632;</span> {n}" for n, c, _ in brushes),
                    elem_id="brush-legend",
                )
                snap = gr.Checkbox(
                    value=True,
                    label="Snap to edges: the sharp strokes select the subject up to its outline "
                    "(the other brushes mark what it is not); off: exactly what you paint stays sharp",
                    elem_id="snap",
                )
                mask_file = gr.File(
                    label="...or upload a mask file (black = sharp; replaces the painting)",
                    file_types=["image"],
                    type="filepath",
                    elem_id="mask-file",
                )
                amount = gr.Slider(
                    *demo_model.amount_span,
                    value=min(3.0, demo_model.amount_span[1]),
                    step=AMOUNT_STEP,
                    label="Amount of blur (%)",
                    info=AMOUNT_INFO,
                    visible=demo_model.takes_amount,
                    elem_id="amount",
                )
                note = gr.Markdown(
                    "The model's guess appears once there is a photo and a sharp area.",
                    visible=demo_model.takes_amount,
                    elem_id="guess",
                )
                moved = gr.State(False)  # the user moved the slider: Run tells the model its amount
                run_button = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column():
                result = gr.ImageSlider(
                    label="Before / after (drag the handle)",
                    type="filepath",
                    format="png",
                    interactive=False,
                    elem_id="result",
                    max_height=520,
                )
                download = gr.DownloadButton("Download full-resolution PNG", visible=False, elem_id="download")
                preview = gr.Image(
                    label="What stays sharp (the rest is dimmed)",
                    type="numpy",
                    interactive=False,
                    elem_id="selection",
                    height=300,
                )
        if examples:
            gr.Examples(examples=[[str(p)] for p in examples], inputs=[editor], label="Example photos")
        amount.input(lambda: True, outputs=moved, show_progress="hidden")
        for source in (editor.change, mask_file.change, snap.change):
            source(
                on_change,
                inputs=[editor, mask_file, snap],
                outputs=[amount, note, moved, preview],
                show_progress="hidden",
                trigger_mode="always_last",
            )
        run_button.click(
            on_run,
            inputs=[editor, mask_file, amount, moved, snap],
            outputs=[result, download],
            show_progress="full",
            concurrency_limit=1,
        )
    return page


# Gradio's page template loads an iframe-resizer script from cdnjs (only useful when embedded elsewhere) and
# preconnects to Google Fonts; a local demo must not reach the internet, so these tags are cut from the HTML.
_EXTERNAL_TAGS = re.compile(
    rb'<script[^>]*\ssrc="https?://[^"]*"[^>]*>\s*</script>|<link[^>]*\shref="https?://[^"]*"[^>]*>'
)


class NoExternalAssets:
    """ASGI middleware: removes <script src=...> and <link href=...> tags that point to another host from the
    HTML pages the app serves (responses of other types pass through untouched, streamed as before)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        start: dict | None = None
        chunks: list[bytes] = []

        async def filtered_send(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if b"text/html" not in headers.get(b"content-type", b""):
                    await send(message)
                    return
                start = message  # hold it until the body is complete: its content-length will change
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = _EXTERNAL_TAGS.sub(b"", b"".join(chunks))
            headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, filtered_send)


def launch(page: gr.Blocks, host: str, port: int) -> str:
    """Start serving the page in a background thread (one Run at a time: the model uses every core); returns its
    URL. `page.block_thread()` then waits for Ctrl+C, `page.close()` stops it."""
    from starlette.middleware import Middleware

    page.queue(default_concurrency_limit=1)
    try:
        page.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            show_api=False,
            quiet=True,
            max_file_size=MAX_UPLOAD,
            prevent_thread_lock=True,
            ssr_mode=False,
            app_kwargs={"middleware": [Middleware(NoExternalAssets)]},
        )
    except OSError as err:
        raise UserError(
            f"cannot serve on {host}:{port} ({str(err).splitlines()[0]}): is the port in use? "
            "choose another with --port"
        ) from None
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/"
