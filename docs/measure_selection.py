"""Measure subject selection on real photos with true outlines (docs/subject-selection.md).

    .venv/bin/python docs/measure_selection.py [--data ../shared/data/subject-masks] [--picture davis_dog.jpg]

For each photo of the folder's manifest.csv (image,alpha,category; alpha > 127 = subject), the box is the true
mask's bounding box grown by 5 % of its own width (left and right) and height (top and bottom), clipped to the
photo. Four selections and a bound are scored against the true mask:

- box: the box itself as the mask;
- GrabCut: plain `cv2.grabCut` at the photo's resolution, initialised with the box, 5 iterations, RGB, RNG seed 0;
- snap: `defocus_lit.select.select_subject(photo, box)`;
- snap + stroke: the same with one corrective stroke, made from the snap's largest error (the largest 8-connected
  region where the snap and the truth disagree): a round dab at the region's innermost pixel, of radius the
  smaller of that pixel's distance to the region's edge and 2 % of the photo's long side, marking surely subject
  when the region is missed subject and surely background when it is wrongly selected;
- truth ± 1 % / ± 2 %: not a selection a user can make but a bound on the method: the snap with the box and strokes
  made from the true mask, surely subject where it is more than 1 % (2 %) of the photo's long side inside the true
  outline and surely background where it is that far outside, so only a band of twice that width around the true
  outline is left to the method (how well it places an edge when the region is known).

Scores: IoU, and the boundary F-score at 2 px (the outline of a mask is its pixels with a 4-neighbour outside it,
the photo's frame not counted; precision = share of the selection's outline within 2 px of the true outline,
recall the other way round; F = their harmonic mean). Printed as Markdown: per photo, then medians for all photos,
the tuning half (odd rows of the manifest: 1st, 3rd, ...) and the held-out half (even rows), then the time of
one snap on a photo scaled up to 4032x3024 (12 MP). `--picture NAME` also writes docs/images/subject-selection.png.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from defocus_lit.io import read_mask_grey, read_rgb
from defocus_lit.select import BACKGROUND, SUBJECT, Box, select_subject

ROOT = Path(__file__).resolve().parents[1]
MARGIN = 0.05
TOLERANCE = 2.0
METHODS = ("box", "GrabCut", "snap", "snap + stroke", "truth ± 1 %", "truth ± 2 %")


def margin_box(truth: np.ndarray) -> Box:
    rows, cols = np.nonzero(truth)
    x0, x1, y0, y1 = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
    dx, dy = MARGIN * (x1 - x0), MARGIN * (y1 - y0)
    h, w = truth.shape
    return Box(max(0, round(x0 - dx)), max(0, round(y0 - dy)), min(w, round(x1 + dx)), min(h, round(y1 + dy)))


def box_mask(shape: tuple[int, int], box: Box) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[box.y0 : box.y1, box.x0 : box.x1] = True
    return mask


def plain_grabcut(image: np.ndarray, box: Box) -> np.ndarray:
    labels = np.zeros(image.shape[:2], np.uint8)
    rect = (box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0)
    cv2.setRNGSeed(0)
    cv2.grabCut(image, labels, rect, np.zeros((1, 65)), np.zeros((1, 65)), 5, cv2.GC_INIT_WITH_RECT)
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))


def corrective_stroke(selection: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(H,W) int8 strokes: one dab on the largest error region (see the module's docstring)."""
    error = (selection != truth).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(error, connectivity=8)
    strokes = np.zeros(truth.shape, np.int8)
    if count < 2:
        return strokes
    region = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    inner = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    radius = max(1, int(min(inner[y, x], 0.02 * max(truth.shape))))
    dab = np.zeros(truth.shape, np.uint8)
    cv2.circle(dab, (int(x), int(y)), radius, 1, -1)
    strokes[(dab == 1) & region] = SUBJECT if truth[y, x] else BACKGROUND
    return strokes


def band_strokes(truth: np.ndarray, fraction: float) -> np.ndarray:
    """(H,W) int8 strokes from the true mask: surely subject / background beyond `fraction` of the long side
    inside / outside its outline, unknown in the band between."""
    radius = max(1, round(fraction * max(truth.shape)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    strokes = np.zeros(truth.shape, np.int8)
    strokes[cv2.erode(truth.astype(np.uint8), disk) == 1] = SUBJECT
    strokes[cv2.dilate(truth.astype(np.uint8), disk) == 0] = BACKGROUND
    return strokes


def outline(mask: np.ndarray) -> np.ndarray:
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return mask & (inner == 0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def boundary_f(selection: np.ndarray, truth: np.ndarray) -> float:
    ours, true = outline(selection), outline(truth)
    if not ours.any() or not true.any():
        return float(ours.any() == true.any())
    to_true = cv2.distanceTransform((~true).astype(np.uint8), cv2.DIST_L2, 5)
    to_ours = cv2.distanceTransform((~ours).astype(np.uint8), cv2.DIST_L2, 5)
    precision, recall = (to_true[ours] <= TOLERANCE).mean(), (to_ours[true] <= TOLERANCE).mean()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def selections(image: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    box = margin_box(truth)
    snap = select_subject(image, box)
    return {
        "box": box_mask(truth.shape, box),
        "GrabCut": plain_grabcut(image, box),
        "snap": snap,
        "snap + stroke": select_subject(image, box, corrective_stroke(snap, truth)),
        "truth ± 1 %": select_subject(image, box, band_strokes(truth, 0.01)),
        "truth ± 2 %": select_subject(image, box, band_strokes(truth, 0.02)),
    }


def median_row(name: str, scores: list[dict[str, tuple[float, float]]]) -> str:
    cells = [
        f"{statistics.median(s[m][0] for s in scores):.3f} / {statistics.median(s[m][1] for s in scores):.3f}"
        for m in METHODS
    ]
    return f"| {name} ({len(scores)}) | " + " | ".join(cells) + " |"


def snap_seconds(image: np.ndarray, truth: np.ndarray, runs: int = 3) -> tuple[float, float]:
    """Median wall-clock and CPU time (all threads) of one snap on the photo scaled up to 4032x3024 (the box
    scaled with it). On a machine shared with other work the wall-clock time counts their load too; the CPU
    time is what the snap itself used."""
    big = cv2.resize(image, (4032, 3024), interpolation=cv2.INTER_CUBIC)
    box = margin_box(cv2.resize(truth.astype(np.uint8), (4032, 3024), interpolation=cv2.INTER_NEAREST) > 0)
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        select_subject(big, box)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def picture(image: np.ndarray, truth: np.ndarray, chosen: dict[str, np.ndarray], path: Path) -> None:
    """Box alone, plain GrabCut and the snap (those of them in `chosen`) side by side, each cut to the box and half
    its size around it: the selection's outline in red, the box in blue."""
    box = margin_box(truth)
    dx, dy = (box.x1 - box.x0) // 2, (box.y1 - box.y0) // 2
    x0, y0 = max(0, box.x0 - dx), max(0, box.y0 - dy)
    x1, y1 = min(image.shape[1], box.x1 + dx), min(image.shape[0], box.y1 + dy)
    size = (360, round((y1 - y0) * 360 / (x1 - x0)))
    captions = {"box": "box alone", "GrabCut": "plain GrabCut", "snap": "snapped (defocus-lit mask)"}
    tiles = []
    for name in [m for m in captions if m in chosen]:
        tile = image.copy()
        contours, _ = cv2.findContours(chosen[name].astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(tile, contours, -1, (255, 40, 40), 1)
        cv2.rectangle(tile, (box.x0, box.y0), (box.x1 - 1, box.y1 - 1), (40, 90, 255), 1)
        tile = Image.fromarray(cv2.resize(tile[y0:y1, x0:x1], size, interpolation=cv2.INTER_CUBIC))
        ImageDraw.Draw(tile).text((6, 4), captions[name], fill="white", stroke_width=2, stroke_fill="black")
        tiles.append(tile)
    canvas = Image.new("RGB", (size[0] * len(tiles), size[1]))
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (i * size[0], 0))
    canvas.quantize(256).save(path, optimize=True)


def score_photo(folder: Path, row: dict[str, str], picture_path: Path | None) -> dict[str, tuple[float, float]]:
    """IoU and boundary F of each method on one photo of the manifest; the picture too when a path is given."""
    image = read_rgb(folder / row["image"])
    truth = read_mask_grey(folder / row["alpha"]) > 127
    chosen = selections(image, truth)
    if picture_path is not None:
        picture(image, truth, chosen, picture_path)
    return {m: (iou(chosen[m], truth), boundary_f(chosen[m], truth)) for m in METHODS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "subject-masks")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="photos measured at once (default: CPUs)")
    parser.add_argument("--picture", metavar="NAME", help="write docs/images/subject-selection.png from this photo")
    args = parser.parse_args()
    with open(args.data / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    jobs = [
        (args.data, row, ROOT / "docs" / "images" / "subject-selection.png" if row["image"] == args.picture else None)
        for row in rows
    ]
    with multiprocessing.Pool(args.jobs) as pool:
        scores = pool.starmap(score_photo, jobs)
    halves = ["tuning" if i % 2 == 0 else "held out" for i in range(len(rows))]
    print("| photo | half | " + " | ".join(f"{m} IoU / F" for m in METHODS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in METHODS) + " |")
    for row, half, score in zip(rows, halves, scores):
        print(
            f"| {row['image']} | {half} | "
            + " | ".join(f"{score[m][0]:.3f} / {score[m][1]:.3f}" for m in METHODS)
            + " |"
        )
    print("\n| photos | " + " | ".join(f"{m} IoU / F" for m in METHODS) + " |")
    print("| --- | " + " | ".join("---" for _ in METHODS) + " |")
    print(median_row("all", scores))
    for half in ("tuning", "held out"):
        print(median_row(half, [s for s, h in zip(scores, halves) if h == half]))
    wall, cpu = snap_seconds(read_rgb(args.data / rows[0]["image"]), read_mask_grey(args.data / rows[0]["alpha"]) > 127)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\none snap on {rows[0]['image']} scaled to 4032x3024: {wall:.2f} s wall-clock, {cpu:.2f} s CPU")
    print(f"({os.cpu_count()} CPU cores, load average {load})")


if __name__ == "__main__":
    main()
