"""The speed and memory figures the issues set targets for (`defocus-lit bench`, `run_benchmarks`).

Each part runs in a fresh process (spawn), so its peak resident memory is its own. Timings are medians after
a warm-up; they depend on the machine, so the README records the machine with the figures.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from defocus_lit.errors import UserError
from defocus_lit.malloc import keep_freed_memory

ROUNDS = 3  # alternating Lightning / plain runs per experiment; the best of each (machine noise is ~5 %)
EXPERIMENTS = ("pix2pix_4ch", "uniform_l1", "focus_penalty", "patch_mask", "two_stage")
STEPS = 8  # timed training steps per architecture


@dataclass(frozen=True)
class BenchOptions:
    """What the parts measure: timed training steps per architecture, and the experiments the train part times."""

    steps: int = STEPS
    experiments: tuple[str, ...] = EXPERIMENTS


def _median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----- renderer -----------------------------------------------------------------------------------------------
def bench_render(options: BenchOptions) -> dict:
    """A 640x480 synthetic frame focused on its nearest third, 32 layers, radius up to 24 px."""
    from defocus_lit.data.planes import binary_mask, depth_grey, focal_plane
    from defocus_lit.data.samples import frame_maps
    from defocus_lit.data.synthetic import synthetic_scene
    from defocus_lit.render import RenderSettings, render_defocus

    image, depth = synthetic_scene(7, (480, 640))
    settings = RenderSettings(max_radius=24.0, layers=32, k=40.0)
    in_focus = binary_mask(focal_plane(depth_grey(depth, "depth"), "fore")) == 0
    near, radius = frame_maps(depth, "depth", settings, in_focus=in_focus)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255)
    r, n = torch.from_numpy(radius)[None, None], torch.from_numpy(near)[None, None]
    fast = render_defocus(x, r, n, 32, method="fft")
    direct = render_defocus(x, r, n, 32, method="direct")
    return {
        "render_s": _median_seconds(lambda: render_defocus(x, r, n, 32, method="fft"), 5),
        "render_direct_s": _median_seconds(lambda: render_defocus(x, r, n, 32, method="direct"), 3, warmup=0),
        "render_mad": float((fast - direct).abs().mean()),
    }


# ----- data ---------------------------------------------------------------------------------------------------
def bench_build(options: BenchOptions) -> dict:
    from defocus_lit.data.build import build_dataset
    from defocus_lit.data.sources import open_source

    with tempfile.TemporaryDirectory() as tmp:
        source = open_source("synthetic", num=150, size=(256, 256), seed=1)  # amortises worker start-up
        start = time.perf_counter()
        build_dataset(source, Path(tmp) / "bench.h5", progress=False)
        return {"build_frames_per_s": len(source) / (time.perf_counter() - start)}


def bench_loader(options: BenchOptions) -> dict:
    """Train batches of 256x256 crops from 2 workers, as they feed a GPU: uint8 batches that the DataModule
    makes float on the device (`on_after_batch_transfer`)."""
    from defocus_lit.data.build import build_dataset
    from defocus_lit.data.datamodule import DefocusDataModule
    from defocus_lit.data.sources import open_source

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "loader.h5"
        build_dataset(open_source("synthetic", num=60, size=(320, 320), seed=2), path, progress=False)
        dm = DefocusDataModule(str(path), batch_size=16, num_workers=2, crop_size=256, uint8_batches=True)
        loader = dm.train_dataloader()
        batches = iter(loader)
        next(batches)  # workers started
        count, start = 0, time.perf_counter()
        for _ in range(6):
            for batch in batches:
                count += batch["image"].shape[0]
            batches = iter(loader)
        rate = count / (time.perf_counter() - start)
        del batches, loader  # shuts the persistent workers down now, not by a signal when this process exits
        return {"loader_samples_per_s": rate}


# ----- training -----------------------------------------------------------------------------------------------
def fake_batch(batch_size: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A training batch of the DataModule's layout with random content."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(batch_size, 1, size, size, generator=g) > 0.4).float()
    return {
        "image": torch.rand(batch_size, 3, size, size, generator=g) * 2 - 1,
        "target": torch.rand(batch_size, 3, size, size, generator=g) * 2 - 1,
        "mask": mask,
        "focus": 1 - mask,
        "depth_weight": torch.rand(batch_size, 1, size, size, generator=g),
        "valid": torch.ones(batch_size, 1, size, size),
        "mean_radius": torch.full((batch_size,), 6.0),
    }


def _lightning_images_per_s(cfg, batch: dict, steps: int, warmup: int) -> float:
    import lightning as L

    from defocus_lit.models.module import build_module

    marks: dict[str, float] = {}

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, module, b, batch_idx):
            if batch_idx == warmup:
                marks["start"] = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, b, batch_idx):
            marks["end"] = time.perf_counter()

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Timer()],
    )
    loader = torch.utils.data.DataLoader([batch] * (warmup + steps), batch_size=None)
    trainer.fit(build_module(cfg), train_dataloaders=loader)
    return steps * batch["image"].shape[0] / (marks["end"] - marks["start"])


def _plain_images_per_s(cfg, batch: dict, steps: int, warmup: int) -> float:
    """The same pix2pix step in plain PyTorch: same networks, Adam settings, losses and D-then-G order."""
    from defocus_lit.losses import GANLoss, weighted_sum
    from defocus_lit.models.module import build_module

    module = build_module(cfg).train()
    g_net, d_net = module.generator, module.discriminator
    o = cfg.optim
    opt_g = torch.optim.Adam(g_net.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
    opt_d = torch.optim.Adam(d_net.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
    gan = GANLoss(cfg.loss.gan_mode)
    image, mask, target = batch["image"], batch["mask"], batch["target"]
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        outs = module.outputs(image, mask)
        fake = outs["output"]
        d_net.requires_grad_(True)
        loss_d = 0.5 * (
            gan(d_net(torch.cat([image, mask, target], 1)), True)
            + gan(d_net(torch.cat([image, mask, fake.detach()], 1)), False)
        )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d_net.requires_grad_(False)
        loss_g = gan(d_net(torch.cat([image, mask, fake], 1)), True, for_discriminator=False)
        loss_g = loss_g + weighted_sum(cfg.loss.terms, fake, batch, outs.get("radius"))[0]
        if "coarse" in outs:
            loss_g = loss_g + cfg.loss.coarse_weight * weighted_sum(cfg.loss.terms, outs["coarse"], batch)[0]
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    return steps * image.shape[0] / (time.perf_counter() - start)


def bench_train(options: BenchOptions) -> dict:
    """Images/s at 256x256, batch 4, with each experiment's network as `make train` builds it on this machine
    (CPU preset without a GPU) and the GAN term on, Lightning vs plain PyTorch, alternating so machine load hits
    both alike."""
    from defocus_lit.config import load_experiment

    batch = fake_batch(4, 256)
    lightning, plain = {}, {}
    for name in options.experiments:
        cfg = load_experiment(name, ["logger.wandb=disabled", "loss.gan_weight=1"])  # the full pix2pix step, D too
        torch.manual_seed(0)
        runs_l, runs_p = [], []
        for _ in range(ROUNDS):
            runs_p.append(_plain_images_per_s(cfg, batch, options.steps, warmup=2))
            runs_l.append(_lightning_images_per_s(cfg, batch, options.steps, warmup=2))
        lightning[name], plain[name] = max(runs_l), max(runs_p)
    return {
        "train_images_per_s": lightning,
        "plain_images_per_s": plain,
        "train_model": {"ngf": cfg.model.ngf, "num_downs": cfg.model.num_downs, "batch": 4, "size": 256},
    }


# ----- inference ----------------------------------------------------------------------------------------------
def bench_predict(options: BenchOptions) -> dict:
    """Arch I at full width (ngf 64, 8 downsamplings; the blur head and keep-focus of base.yaml) on random
    photos, as `defocus-lit predict` runs it (generator at `--max-side`, blur at full resolution), and with the
    generator at full resolution (`--max-side 0`, padded to the network's multiple)."""
    from defocus_lit.config import load_experiment
    from defocus_lit.models.defocuser import build_defocuser
    from defocus_lit.models.inference import MAX_SIDE, defocus

    cfg = load_experiment("pix2pix_4ch", ["model.ngf=64", "model.num_downs=8"], cpu_preset=False)
    model = build_defocuser(cfg).eval()
    result: dict = {"predict_max_side": MAX_SIDE}
    for w, h in ((600, 400), (1080, 1350)):
        image, mask = torch.rand(1, 3, h, w) * 2 - 1, (torch.rand(1, 1, h, w) > 0.5).float()
        working_size = partial(defocus, model, image, mask, MAX_SIDE)
        result[f"predict_{w}x{h}_s"] = _median_seconds(working_size, 5)
        result[f"predict_{w}x{h}_full_res_s"] = _median_seconds(partial(defocus, model, image, mask), 3)
    return result


PARTS: dict[str, Callable[[BenchOptions], dict]] = {
    "render": bench_render,
    "build": bench_build,
    "loader": bench_loader,
    "train": bench_train,
    "predict": bench_predict,
}


def _child(name: str, options: BenchOptions, queue) -> None:
    keep_freed_memory()  # as every `defocus-lit` command runs
    result = PARTS[name](options)
    result["_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(result)


def run_part(name: str, options: BenchOptions) -> dict:
    """One part's figures, measured in a fresh process, with its peak resident memory under "_peak_rss_mb"."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, options, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def run_benchmarks(
    parts: Sequence[str] | None = None, *, steps: int = STEPS, experiments: Sequence[str] = EXPERIMENTS
) -> dict:
    """The figures of `parts` (default: all of PARTS, in order), each measured in its own process, with the
    machine they were measured on and each part's peak resident memory in MB. `steps`: timed training steps per
    architecture; `experiments`: those the train part times."""
    unknown = [name for name in parts or () if name not in PARTS]
    if unknown:
        raise UserError(f"parts: unknown part '{unknown[0]}' (valid: {', '.join(PARTS)})")
    options = BenchOptions(steps, tuple(experiments))
    figures: dict = {
        "machine": {"cpus": torch.get_num_threads(), "torch": torch.__version__, "cuda": torch.cuda.is_available()},
        "peak_rss_mb": {},
    }
    for name in parts or PARTS:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        result = run_part(name, options)
        figures["peak_rss_mb"][name] = round(result.pop("_peak_rss_mb"), 1)
        figures.update(result)
    return figures
