"""The README: its Python example runs as written, it stays short, it names every command, and the links of the
README and of docs/ lead to files (and headings) that exist."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defocus_lit.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
REAL_MANIFEST = "../shared/data/real-rgbd/manifest.csv"
# pages written on other branches at the same time as this test; once they are merged they are checked as any other
PENDING = {ROOT / "docs" / "reliability.md", ROOT / "docs" / "subject-selection.md"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def python_example() -> str:
    """The first ```python block after the heading "## Python API"."""
    text = README.read_text()
    assert "\n## Python API\n" in text
    block = re.search(r"```python\n(.*?)```", text.split("\n## Python API\n", 1)[1], re.S)
    assert block, "no ```python block under ## Python API"
    return block.group(1)


def write_manifest(folder: Path, frames: int = 2) -> Path:
    """RGB-D frames 48x72 and their CSV, as tests/test_evaluate.py writes them: a near square (1 m), a middle band
    (2 m), a far wall (4 m)."""
    rng = np.random.default_rng(0)
    rows = ["image,depth,kind,scale"]
    for i in range(frames):
        depth = np.full((48, 72), 4000, np.uint16)
        depth[20:, :] = 2000
        depth[8 + i : 30 + i, 10:36] = 1000
        Image.fromarray(depth).save(folder / f"scene{i}_depth.png")
        Image.fromarray(rng.integers(0, 256, (48, 72, 3), dtype=np.uint8)).save(folder / f"scene{i}_rgb.png")
        rows.append(f"scene{i}_rgb.png,scene{i}_depth.png,depth,0.001")
    path = folder / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_the_python_example_is_five_lines():
    assert len([line for line in python_example().splitlines() if line.strip()]) == 5


def test_the_python_example_runs_as_written(tiny_checkpoint, tmp_path, monkeypatch):
    """In a folder laid out as after `make train EXP=patch_mask`, with the photo, mask and manifest it names."""
    checkpoints = tmp_path / "outputs" / "patch_mask" / "run1" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, checkpoints / "best-epoch000-psnr1.00.ckpt")
    photo = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    mask = np.full((96, 128), 255, np.uint8)
    mask[20:80, 30:70] = 0  # black: keep sharp
    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    (tmp_path / "frames").mkdir()
    manifest = write_manifest(tmp_path / "frames")
    code = python_example()
    assert REAL_MANIFEST in code
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(code.replace(REAL_MANIFEST, str(manifest)), str(README), "exec"), names)

    assert names["model"].path.name == "best-epoch000-psnr1.00.ckpt"
    portrait = names["portrait"]
    assert portrait.shape == (96, 128, 3) and portrait.dtype == np.uint8
    sharp = np.asarray(Image.open(tmp_path / "photo.jpg").convert("RGB"))[20:80, 30:70]
    assert (portrait[20:80, 30:70] == sharp).all()  # the mask's black stays as the photo has it
    report = names["report"]
    assert {"mean", "samples", "settings"} <= set(report)
    assert {"model", "model_told_amount", "identity", "mask_blur", "global_blur", "oracle_blur"} == set(report["mean"])
    assert report["mean"]["model"]["psnr_defocus"] > 0 and len(report["samples"]) > 0


def test_the_readme_is_at_most_250_lines():
    assert len(README.read_text().splitlines()) <= 250


def test_the_readme_names_every_command():
    text = README.read_text()
    assert [name for name in COMMANDS if f"defocus-lit {name}" not in text] == []


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings: lower case, punctuation but - and _ dropped, spaces -."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#{1,6} (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if linked in PENDING and not linked.exists():
            continue
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert broken == []
