"""Screenshots of the demo page for the README (docs/images/demo-{empty,painted,result}.png).

    .venv/bin/python docs/make_demo_screenshots.py [--ckpt C]     (default: the newest outputs/ best checkpoint)

Starts `defocus-lit demo` on a free port, opens it in headless Chromium (as tests/test_demo_browser.py does),
uploads a synthetic scene of the project's own generator, paints a few horizontal strokes on its foreground subject
(taken from the scene's depth) with the sharp brush, waits for the snapped selection, runs, and saves the three
states, scaled down.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_demo_browser import CHROMIUM_FLAGS, VIEWPORT, chromium_path, start_demo  # noqa: E402 (after the sys.path line)

from defocus_lit.commands.demo import find_checkpoint  # noqa: E402 (after the sys.path line)
from defocus_lit.data.planes import foreground_subject, nearness, valid_depth  # noqa: E402 (after the sys.path line)
from defocus_lit.data.synthetic import synthetic_scene  # noqa: E402 (after the sys.path line)

BRUSH_RADIUS = 25  # image px: the editor's "auto" brush size


def scene(seed: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic photo and its foreground subject (bool)."""
    rgb, depth = synthetic_scene(seed, size)
    return rgb, foreground_subject(nearness(depth, "depth"), valid_depth(depth))


def image_box(page) -> tuple[float, float, float, float]:
    """(left, top, width, height) of the photo inside the editor's canvas, in page CSS pixels, found from a
    screenshot of the canvas (the photo is drawn centred on a plain background)."""
    canvas = page.locator("#photo canvas").first
    box = canvas.bounding_box()
    with tempfile.NamedTemporaryFile(suffix=".png") as shot:
        canvas.screenshot(path=shot.name)
        pixels = np.asarray(Image.open(shot.name).convert("RGB")).astype(int)
    background = pixels[2, 2]
    ys, xs = np.nonzero(np.abs(pixels - background).sum(axis=2) > 30)
    sx, sy = box["width"] / pixels.shape[1], box["height"] / pixels.shape[0]
    return (
        box["x"] + xs.min() * sx,
        box["y"] + ys.min() * sy,
        (xs.max() - xs.min() + 1) * sx,
        (ys.max() - ys.min() + 1) * sy,
    )


def paint(page, subject: np.ndarray, every: int = 3) -> None:
    """Horizontal strokes over the subject shrunk by the brush radius, on every `every`-th brush row: a few
    strokes, which snapping (on by default) grows to the subject's outline. They keep two brush radii inside it: a
    stroke that spills onto the background tells the selection that the background's colours are the subject's."""
    h, w = subject.shape
    left, top, width, height = image_box(page)
    inner = ndimage.binary_erosion(subject, iterations=2 * BRUSH_RADIUS)
    page.locator("#photo button[aria-label='Brush']").first.click()
    for y in range(BRUSH_RADIUS, h, every * BRUSH_RADIUS):
        row = inner[y]
        edges = np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0]))
        for x0, x1 in zip(edges[::2], edges[1::2]):
            page.mouse.move(left + (x0 + 0.5) / w * width, top + (y + 0.5) / h * height)
            page.mouse.down()
            for x in np.linspace(x0, x1 - 1, max(2, (x1 - x0) // 30)):
                page.mouse.move(left + (x + 0.5) / w * width, top + (y + 0.5) / h * height)
            page.mouse.up()


def settled(page, selector: str, quiet_ms: int = 4000, timeout_ms: int = 120_000) -> None:
    """Wait until the image at `selector` has kept its source for `quiet_ms`: every stroke starts a new selection,
    and the last one to finish is the one to show."""
    source, waited = None, 0
    while waited < timeout_ms:
        now = page.locator(selector).first.get_attribute("src")
        if now == source:
            return
        source = now
        page.wait_for_timeout(quiet_ms)
        waited += quiet_ms
    raise TimeoutError(f"{selector} kept changing for {timeout_ms // 1000} s")


def save(page, path: Path, width: int = 960) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    with tempfile.NamedTemporaryFile(suffix=".png") as shot:
        page.screenshot(path=shot.name)
        img = Image.open(shot.name).convert("RGB")
    img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    img.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    ckpt = (args.ckpt or find_checkpoint(ROOT / "outputs")).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="demo-shots-"))
    rgb, subject = scene(args.seed, (400, 600))
    Image.fromarray(rgb).save(work / "scene.png")
    proc, url, _ = start_demo(ckpt, work)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            page.wait_for_selector("#photo canvas")
            save(page, args.out / "demo-empty.png")
            page.locator("#photo input[type=file]").first.set_input_files(str(work / "scene.png"))
            page.wait_for_timeout(1500)
            paint(page, subject)
            page.locator("#selection img").wait_for(timeout=60_000)  # the snapped selection, before Run
            settled(page, "#selection img")
            save(page, args.out / "demo-painted.png")
            page.click("#run")
            page.locator("#result img").nth(1).wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            # move the before/after handle left, so "after" shows the sharp subject on the blurred background
            box = page.locator("#result img").nth(1).bounding_box()
            y = box["y"] + box["height"] / 2
            page.mouse.move(box["x"] + box["width"] / 2, y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.12, y, steps=8)
            page.mouse.up()
            save(page, args.out / "demo-result.png")
            browser.close()
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
