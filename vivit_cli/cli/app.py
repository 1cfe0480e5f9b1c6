"""Entry point of the `vivit` console script."""

from __future__ import annotations

import atexit
import importlib
import os
import sys

import typer

from vivit_cli.errors import VivitError

app = typer.Typer(
    name="vivit",
    help="Run the ViViT ablations, from one command to a paper-ready table.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def _root() -> None:
    """Run the ViViT ablations, from one command to a paper-ready table."""

# Each module adds its commands with `register(app)`; keep its top-level imports light.
COMMAND_MODULES = ("describe", "data", "train", "eval", "sweep", "report", "reproduce", "convert", "bench")
for _name in COMMAND_MODULES:
    importlib.import_module(f"vivit_cli.cli.{_name}").register(app)

def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; bad input becomes one line on stderr and exit code 2, never a traceback."""
    from vivit_cli.runtime.cpu import apply_xla_defaults

    apply_xla_defaults()  # before any command starts JAX's backend: XLA reads its flags once
    try:
        app(args=argv, standalone_mode=True)
    except VivitError as e:
        sys.stderr.write(f"error: {e}\n")
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return 0

def entry() -> None:
    status = [1]  # an exception that escapes main() exits 1, as Python's own handling would
    atexit.register(_exit_before_teardown, status)  # registered first, so it runs after every other exit handler
    status[0] = main()
    sys.exit(status[0])


def _exit_before_teardown(status: list[int]) -> None:
    """The last exit handler of a command that loaded JAX: Python has joined its threads and run every other
    handler (JAX's distributed shutdown, W&B's, Orbax's), so all that is left is the interpreter's teardown of its
    modules, which took 0.5 s after every `vivit train` here (XLA's client and its threads, 2026-12-02): skipped,
    with the streams flushed first."""
    if "jax" not in sys.modules:
        return
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status[0])

if __name__ == "__main__":
    entry()
