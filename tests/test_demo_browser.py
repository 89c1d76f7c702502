"""The demo page in a real browser: `defocus-lit demo` in a subprocess, driven by headless Chromium (Debian's
`chromium` through Playwright; nothing is downloaded at run time). Upload a photo, paint a stroke, run: the result
has the photo's size, is unchanged under the stroke and blurred elsewhere; Run without a photo shows a message and
the server keeps serving; the page loads nothing from another host.

Needs `chromium` (apt) and the `browser` extra (Playwright); `.ci/browser.sh` installs both and runs this file.
Without them the test is skipped, saying so. DEMO_SCREENSHOTS=DIR saves the page (empty, painted, result) there.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HOW = "install chromium (apt-get install chromium) and pip install -e '.[demo,browser]', or run .ci/browser.sh"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}


def chromium_path() -> str | None:
    """$CHROMIUM, else Debian's chromium on PATH."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the demo server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def start_demo(ckpt: Path, cwd: Path, extra: list[str] | None = None) -> tuple[subprocess.Popen, str, Path]:
    """`defocus-lit demo` on a free localhost port: (process, URL, log file)."""
    port = free_port()
    log = cwd / f"demo-{port}.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "defocus_lit.cli", "demo", "--ckpt", str(ckpt), "--port", str(port), *(extra or [])],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, proc, timeout=180)
    except (RuntimeError, TimeoutError):
        proc.kill()
        proc.wait()
        pytest.fail(f"the demo did not start: {log.read_text()[-3000:]}")
    return proc, url, log


def _skip(reason: str) -> None:
    """Skip, saying how to run the test; in CI (DEMO_BROWSER_REQUIRED=1, set by .ci/browser.sh) fail instead."""
    if os.environ.get("DEMO_BROWSER_REQUIRED") == "1":
        pytest.fail(f"{reason} (DEMO_BROWSER_REQUIRED=1)")
    pytest.skip(f"{reason}; {HOW}")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        import gradio  # noqa: F401
        from playwright import sync_api
    except ImportError as err:
        _skip(f"{err.name} is not installed")
    executable = chromium_path()
    if executable is None:
        _skip("no chromium found (set CHROMIUM=/path/to/chromium)")
    with sync_api.sync_playwright() as playwright:  # a fresh temporary profile per launch
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def demo_url(browser, tiny_checkpoint, tmp_path_factory) -> Iterator[str]:
    proc, url, log = start_demo(tiny_checkpoint, tmp_path_factory.mktemp("demo"))
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    print(log.read_text()[-2000:])


def _screenshot(page, name: str) -> None:
    folder = os.environ.get("DEMO_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def paint_stroke(page, dx: float, steps: int = 4) -> None:
    """Select the brush and drag horizontally through the centre of the editor's canvas (the photo is shown
    centred in it), from -dx to +dx CSS pixels."""
    page.locator("#photo button[aria-label='Brush']").first.click()
    box = page.locator("#photo canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - dx, cy)
    page.mouse.down()
    for i in range(steps + 1):
        page.mouse.move(cx - dx + 2 * dx * i / steps, cy)
    page.mouse.up()


def laplacian_energy(image: np.ndarray) -> float:
    grey = image.astype(np.float64).mean(axis=2)
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float((lap**2).mean())


def test_paint_run_compare_download(browser, demo_url, tmp_path):
    h, w = 240, 320
    photo = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)  # texture: blur shows at once
    Image.fromarray(photo).save(tmp_path / "photo.png")
    page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(demo_url)
    page.wait_for_selector("#photo canvas")
    assert "binary mask" in page.locator("#instructions").inner_text()
    assert page.locator("#amount").is_visible()  # the tiny checkpoint was trained with the amount input
    _screenshot(page, "demo-empty")

    # bad input first: Run without a photo -> a visible message, no result
    page.click("#run")
    toast = page.locator(".toast-body").first
    toast.wait_for(timeout=30_000)
    assert "no photo" in toast.inner_text() and "Traceback" not in page.content()
    assert page.locator("#result img").count() == 0
    page.locator(".toast-body .toast-close").first.click()

    # the same server then serves a real run
    page.locator("#photo input[type=file]").first.set_input_files(str(tmp_path / "photo.png"))
    page.wait_for_timeout(1000)
    page.locator("#snap input").uncheck()  # noise has no subject to snap to: the stroke is the mask
    paint_stroke(page, dx=120)
    # the slider moves to the model's guess for the photo and the stroke, shown as a number
    page.wait_for_function(
        "document.querySelector('#guess').innerText.includes('guess for this photo')", timeout=30_000
    )
    guessed = float(re.search(r"([0-9.]+) %", page.locator("#guess").inner_text()).group(1))
    page.wait_for_function(
        f"Math.abs(document.querySelector('#amount input[type=number]').value - {guessed}) < 0.011", timeout=10_000
    )
    _screenshot(page, "demo-painted")
    page.click("#run")
    after = page.locator("#result img").nth(1)
    after.wait_for(timeout=60_000)
    page.wait_for_function("document.querySelectorAll('#result img')[1].naturalWidth > 0", timeout=30_000)
    assert after.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [w, h]
    _screenshot(page, "demo-result")
    with page.expect_download(timeout=30_000) as download:
        page.click("#download")
    download.value.save_as(tmp_path / "out.png")
    page.close()

    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    assert out.shape == photo.shape  # full resolution
    same = (out == photo).all(axis=2)
    assert same[h // 2 - 3 : h // 2 + 4, w // 2 - 20 : w // 2 + 21].all()  # unchanged under the stroke
    rows = np.nonzero(same.any(axis=1))[0]
    assert rows.min() > h // 4 and rows.max() < 3 * h // 4  # ... and only around it: a horizontal band
    for band in (slice(0, h // 5), slice(4 * h // 5, h)):  # blurred elsewhere
        assert np.abs(out[band].astype(int) - photo[band]).mean() > 10
        assert laplacian_energy(out[band]) < 0.5 * laplacian_energy(photo[band])
    external = [url for url in requests if not url.startswith(demo_url) and not url.startswith(("data:", "blob:"))]
    assert external == [], f"the page loaded from other hosts: {external}"


def test_a_stroke_snaps_to_the_subject(browser, demo_url, tmp_path):
    """Snapping is on by default: a short stroke inside a disk keeps the whole disk sharp, and the page shows the
    selection before the run."""
    h, w = 240, 320
    rng = np.random.default_rng(1)
    photo = np.stack([rng.integers(0, 60, (h, w)), rng.integers(90, 200, (h, w)), rng.integers(120, 255, (h, w))], 2)
    rows, cols = np.mgrid[:h, :w]
    distance = np.hypot(rows - h / 2, cols - w / 2)
    disk = distance < 80
    photo[disk] = [215, 100, 20] + rng.integers(0, 40, (disk.sum(), 3))  # orange, textured: any blur shows
    Image.fromarray(photo.astype(np.uint8)).save(tmp_path / "disk.png")
    page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
    page.goto(demo_url)
    page.wait_for_selector("#photo canvas")
    assert page.locator("#snap input").is_checked()
    page.locator("#photo input[type=file]").first.set_input_files(str(tmp_path / "disk.png"))
    page.wait_for_timeout(1000)
    paint_stroke(page, dx=20)
    page.locator("#selection img").wait_for(timeout=30_000)  # the snapped selection, shown before Run
    _screenshot(page, "demo-snapped")
    page.click("#run")
    page.locator("#result img").nth(1).wait_for(timeout=60_000)
    with page.expect_download(timeout=30_000) as download:
        page.click("#download")
    download.value.save_as(tmp_path / "out.png")
    page.close()

    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    assert (out[distance < 75] == photo[distance < 75]).all()  # the whole disk, far beyond the stroke, is sharp
    assert np.abs(out[distance > 90].astype(int) - photo[distance > 90]).mean() > 10  # the rest is blurred
