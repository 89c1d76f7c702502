"""Mixing sources: a mix file of synthetic scenes and a manifest -> one dataset that records each sample's source,
each source split on its own, and a train sampler that draws by source weight."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from defocus_lit.cli import main
from defocus_lit.data.build import assign_splits
from defocus_lit.data.datamodule import DefocusDataModule, SeededSampler
from defocus_lit.data.hdf5 import read_info
from defocus_lit.data.sources import MixedSource, open_source
from defocus_lit.errors import UserError

SIZE = 32
FAST_ARGS = ["--layers", "4", "--max-radius", "4", "--quiet", "--workers", "0"]
SYNTHETIC, PHOTOS = 6, 10


def _photos(folder, n: int) -> str:
    """n RGB-D photos of two sizes (depth rising 1..5 m left to right: every plane is kept) and their manifest."""
    rows = []
    for i in range(n):
        h, w = (40, 60) if i % 2 else (50, 30)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
        depth = np.broadcast_to(np.linspace(1000, 5000, w).astype(np.uint16), (h, w)).copy()
        Image.fromarray(depth).save(folder / f"p{i}_depth.png")
        rows.append(f"p{i}.png,p{i}_depth.png")
    (folder / "photos.csv").write_text("image,depth\n" + "\n".join(rows) + "\n")
    return "photos.csv"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["data", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mix")
    (folder / "photos").mkdir()
    _photos(folder / "photos", PHOTOS)
    (folder / "mix.yaml").write_text(
        "sources:\n"
        f"  - {{source: synthetic, num: {SYNTHETIC}, seed: 3}}\n"
        "  - {source: manifest, path: photos/photos.csv, weight: 3.0}  # relative to this file\n"
    )
    return folder


@pytest.fixture(scope="module")
def mixed(folder):
    out = folder / "mixed.h5"
    argv = ["build", "--source", "mix", "--path", str(folder / "mix.yaml"), "--out", str(out), "--size", "32x32"]
    assert main(["data", *argv, *FAST_ARGS]) == 0
    return out


def test_mixed_source_concatenates_lazily_and_names_frames_by_origin(folder):
    mix = open_source("mix", str(folder / "mix.yaml"), size=(SIZE, SIZE))
    assert isinstance(mix, MixedSource) and len(mix) == SYNTHETIC + PHOTOS
    assert [mix.locate(i) for i in (0, SYNTHETIC - 1, SYNTHETIC, len(mix) - 1)] == [(0, 0), (0, 5), (1, 0), (1, 9)]
    assert mix[0].name == "synthetic/synthetic_00000" and mix[0].image.shape == (SIZE, SIZE, 3)
    assert mix[SYNTHETIC + 3].name == "manifest/p3" and mix[-1].name == "manifest/p9"
    assert [(p["name"], p["weight"], p["frames"]) for p in mix.parts()] == [
        ("synthetic", 1.0, SYNTHETIC),
        ("manifest", 3.0, PHOTOS),
    ]
    synthetic = open_source("synthetic", num=2, size=(8, 8))
    assert MixedSource([synthetic, synthetic], [1, 2]).names == ["synthetic0", "synthetic1"]


def test_mixed_build_records_each_samples_source(mixed, folder):
    with h5py.File(mixed) as f:
        source, frame, image = f["source"][:], f["frame"][:], f["image"]
        assert image.shape[1:3] == (SIZE, SIZE)  # photos of two sizes and scenes, all fitted to --size
        sources = json.loads(f.attrs["sources"])
    assert set(source) == {0, 1}
    assert np.array_equal(source, (frame >= SYNTHETIC).astype(np.uint8))
    assert sources == [
        {"name": "synthetic", "path": None, "weight": 1.0, "frames": SYNTHETIC},
        {"name": "manifest", "path": str((folder / "photos" / "photos.csv").resolve()), "weight": 3.0, "frames": 10},
    ]


def test_each_source_is_split_on_its_own(mixed):
    with h5py.File(mixed) as f:
        source, frame, split = f["source"][:], f["frame"][:], f["split"][:]
    for fr in np.unique(frame):
        assert len(np.unique(split[frame == fr])) == 1  # the planes of a frame stay together
    photos = {int(fr): int(split[frame == fr][0]) for fr in np.unique(frame[source == 1])}
    assert len(photos) == PHOTOS and sorted(np.bincount(list(photos.values()), minlength=3)) == [1, 1, 8]
    scenes = {int(fr): int(split[frame == fr][0]) for fr in np.unique(frame[source == 0])}
    assert np.bincount(list(scenes.values()), minlength=3)[1:].tolist() == [1, 1]  # val and test: one scene each
    # as if each source were built alone (same seed, its frames counted from 0)
    alone = assign_splits(dict.fromkeys(range(PHOTOS)), (0.8, 0.1, 0.1), seed=0)
    assert photos == {fr + SYNTHETIC: code for fr, code in alone.items()}


def test_info_shows_sources_weights_and_counts(mixed, capsys):
    info = read_info(mixed)
    photos = info["sources"][1]
    assert photos["name"] == "manifest" and photos["weight"] == 3.0
    assert sum(photos["samples"].values()) + sum(info["sources"][0]["samples"].values()) == info["num_samples"]
    rc, text, _ = _run(capsys, "info", str(mixed))
    lines = [line for line in text.splitlines() if "weight" in line]
    assert rc == 0 and text.count("sources:") == 1 and len(lines) == 2
    assert "synthetic" in lines[0] and "weight 1" in lines[0] and f"{SYNTHETIC} frames" in lines[0]
    assert "manifest" in lines[1] and "photos.csv" in lines[1] and "weight 3" in lines[1]
    assert f"{sum(photos['samples'].values())} samples (train {photos['samples']['train']}" in lines[1]


@pytest.mark.parametrize(
    "entry, key",
    [
        ("{source: synthetic, num: 4, colour: red}", "sources[1].colour"),
        ("{source: synthetic, num: 4, weight: 0}", "sources[1].weight: must be > 0, got 0"),
        ("{source: synthetic, num: 4, weight: heavy}", "sources[1].weight"),
        ("{source: mix, path: other.yaml}", "sources[1].source"),
        ("{source: manifest}", "sources[1].path"),
        ("{source: manifest, path: photos/photos.csv, splits: s.mat}", "sources[1].splits"),
        ("{source: synthetic, num: 0}", "sources[1].num"),
        ("{source: manifest, path: absent.csv}", "sources[1]: "),
        ("{source: synthetic", "not a readable YAML file"),
    ],
)
def test_bad_mix_file_names_the_file_and_key_and_writes_nothing(folder, tmp_path, capsys, entry, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"sources:\n  - {{source: synthetic, num: 4}}\n  - {entry}\n")
    out = tmp_path / "d.h5"
    rc, stdout, err = _run(capsys, "build", "--source", "mix", "--path", str(bad), "--out", str(out), *FAST_ARGS)
    assert rc == 2 and stdout == "" and err.startswith(f"error: {bad}: ") and len(err.strip().splitlines()) == 1
    assert key in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_mix_file_shape_and_misplaced_options(tmp_path):
    path = tmp_path / "m.yaml"
    for text, message in (
        ("sources: []", "sources: expected a list"),
        ("- {source: synthetic}", "sources: expected a list"),
        ("sources: [{source: synthetic}]\nextra: 1", "extra: unknown key"),
        ("sources: [3]", r"sources\[0\]: expected a mapping"),
    ):
        path.write_text(text)
        with pytest.raises(UserError, match=f"{path}: {message}"):
            open_source("mix", str(path))
    with pytest.raises(UserError, match="num: a mix takes"):
        open_source("mix", str(path), num=3)


def _draws(sampler: SeededSampler, epochs: int) -> np.ndarray:
    """How often each position is drawn over `epochs` epochs."""
    counts = np.zeros(sampler.size, np.int64)
    for _ in range(epochs):
        positions = [position for position, _ in sampler]
        assert len(positions) == sampler.size  # an epoch is as long as without weights
        np.add.at(counts, positions, 1)
    return counts


def test_weights_set_how_often_a_sample_is_drawn():
    weights = np.array([1.0] * 20 + [3.0] * 20)
    counts = _draws(SeededSampler(40, seed=5, weights=weights), epochs=100)
    assert counts.sum() == 40 * 100
    share = counts[20:].sum() / counts.sum()
    assert abs(share - 0.75) < 0.03, share  # 3 of every 4 draws; binomial sd 0.007
    again = SeededSampler(40, seed=5, weights=weights)
    again.set_epoch(3)
    replay = SeededSampler(40, seed=5, weights=weights)
    for _ in range(3):
        list(replay)
    assert list(again) == list(replay)  # reproducible per (seed, epoch)


def test_equal_weights_give_todays_permutation():
    plain, equal = SeededSampler(30, seed=7), SeededSampler(30, seed=7, weights=np.full(30, 4.0))
    for epoch in range(3):
        rng = np.random.default_rng([7, epoch])
        expected = list(zip(rng.permutation(30).tolist(), rng.integers(0, 2**63 - 1, 30).tolist()))
        assert list(plain) == list(equal) == expected


def test_train_sampler_draws_by_source_weight(mixed):
    dm = DefocusDataModule(str(mixed), batch_size=2, crop_size=16, seed=1)
    sampler = dm.train_dataloader().sampler
    with h5py.File(mixed) as f:
        train_source = f["source"][:][f["split"][:] == 0]
    assert np.array_equal(sampler.probabilities > sampler.probabilities.min(), train_source == 1)
    counts = _draws(sampler, epochs=100)
    photos, scenes = (train_source == 1).sum(), (train_source == 0).sum()
    share = counts[train_source == 1].sum() / counts.sum()
    assert abs(share - 3 * photos / (3 * photos + scenes)) < 0.03, share  # a photo drawn 3x as often as a scene
    val = dm.val_dataloader()
    assert val.sampler is not None and sorted(val.sampler) == list(range(len(dm.datasets["val"])))  # each once


def test_a_file_without_sources_is_from_an_older_version(mixed, tmp_path):
    old = tmp_path / "old.h5"
    old.write_bytes(mixed.read_bytes())
    with h5py.File(old, "a") as f:
        del f["source"]
    with pytest.raises(UserError, match="older defocus_lit \\(no 'source' dataset\\); rebuild"):
        read_info(old)
