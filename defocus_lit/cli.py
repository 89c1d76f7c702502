"""The `defocus-lit` command. Each subcommand lives in its own module under `defocus_lit.commands`, imported only
when it runs, so `defocus-lit data info` does not pay for importing Lightning.

A subcommand module provides `configure_parser(parser)` and `run(args) -> int | None`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from defocus_lit import __version__
from defocus_lit.errors import UserError, disk_full
from defocus_lit.malloc import keep_freed_memory

COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("defocus_lit.commands.data", "build an HDF5 training set from RGB-D images, or describe one"),
    "render": ("defocus_lit.commands.render", "render a defocused photo from an image and its depth"),
    "train": ("defocus_lit.commands.train", "train an experiment: defocus-lit train EXP [key=value ...]"),
    "predict": ("defocus_lit.commands.predict", "defocus your own photo (or a folder) with a trained checkpoint"),
    "mask": ("defocus_lit.commands.mask", "select the subject from a box or strokes and write its mask file"),
    "demo": ("defocus_lit.commands.demo", "portrait mode in the browser: paint the mask, run, compare, download"),
    "evaluate": ("defocus_lit.commands.evaluate", "score a checkpoint or a baseline and write a report"),
    "export": ("defocus_lit.commands.export", "export a checkpoint's generator to TorchScript or ONNX"),
    "sweep": ("defocus_lit.commands.sweep", "run a hyperparameter sweep with W&B or offline with Optuna"),
    "bench": ("defocus_lit.commands.bench", "measure renderer, data, training and inference speed"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error as the project's one-line `error: ...`, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _top_help() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: defocus-lit COMMAND [options]   (defocus_lit {__version__})", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run `defocus-lit COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command's exit status: 0, 2 for bad input or a full disk (one `error:` line), 130 when interrupted, 141
    when the reader of stdout went away (`defocus-lit data info F | head`), as for a tool that SIGPIPE ends."""
    try:
        return _run(argv)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
        return 141


def _run(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    parser = ArgumentParser(prog=f"defocus-lit {name}", description=COMMANDS[name][1])
    module.configure_parser(parser)
    try:  # key=value words may follow options (`sweep F.yaml --trials 3 trainer.max_epochs=1`)
        args = parser.parse_intermixed_args(argv[1:])
    except TypeError:  # argparse cannot intermix with sub-commands (`data build|info`)
        args = parser.parse_args(argv[1:])
    keep_freed_memory()  # training 1.4-1.8x as fast, predict faster (defocus_lit/malloc.py)
    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # the last resort for a write to a full disk that no atomic write caught (a log file)
        full = disk_full(err)
        if full is None:
            raise
        print(f"error: {full}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
