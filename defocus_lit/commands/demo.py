"""`defocus-lit demo`: portrait mode in the browser (the page: `defocus_lit.demo_page`). Loads a checkpoint (the
newest best one under outputs/ by default), serves the page on 127.0.0.1 unless `--host` says otherwise, and waits
for Ctrl+C."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from defocus_lit.commands import add_inference_options
from defocus_lit.demo_page import MAX_MEGAPIXELS, DemoModel, build_page, import_gradio, launch
from defocus_lit.errors import UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
CHECKPOINT_GLOB = "*/*/checkpoints/best-*.ckpt"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", help="checkpoint (.ckpt); default: the newest outputs/" + CHECKPOINT_GLOB)
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default: {DEFAULT_HOST}, this machine only; 0.0.0.0 = every "
        "network interface: the page has no login)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument("--examples", metavar="DIR", help="a folder of photos offered as examples on the page")
    add_inference_options(parser)
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=MAX_MEGAPIXELS,
        metavar="MP",
        help=f"largest photo the page accepts (default: {MAX_MEGAPIXELS:g} MP)",
    )


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port: {args.port} is not a port number (1-65535)")
    if args.max_megapixels <= 0:
        raise UserError(f"--max-megapixels: must be > 0, got {args.max_megapixels:g}")
    examples = list_examples(Path(args.examples)) if args.examples else []
    ckpt = Path(args.ckpt) if args.ckpt else find_checkpoint(Path("outputs"))
    import_gradio()
    demo_model = DemoModel.load(ckpt, args.device, args.max_side, args.max_megapixels)
    warning = host_warning(args.host, args.port)
    if warning:
        print(warning, file=sys.stderr)
    page = build_page(demo_model, examples)
    print(f"checkpoint {ckpt} ({demo_model.describe()})")
    url = launch(page, args.host, args.port)
    print(f"serving {url} (Ctrl+C stops)", flush=True)
    page.block_thread()
    return 0


def find_checkpoint(root: Path) -> Path:
    """The newest (by modification time) best checkpoint of any run under `root`."""
    found = sorted(root.glob(CHECKPOINT_GLOB), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no checkpoint found ({root}/{CHECKPOINT_GLOB}): run `make train` first, or give --ckpt")
    return found[-1]


def list_examples(folder: Path) -> list[Path]:
    from defocus_lit.commands.predict import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise UserError(f"--examples {folder}: no such folder")
    photos = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not photos:
        raise UserError(f"--examples {folder}: no photos ({', '.join(IMAGE_SUFFIXES)})")
    return photos


def host_warning(host: str, port: int) -> str | None:
    """A warning when the page is reachable from other machines (it has no login)."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return None
    return (
        f"warning: --host {host} serves the page to other machines on port {port}; it has no login: anyone "
        "who can reach it can upload photos and use this machine's CPU/GPU"
    )
