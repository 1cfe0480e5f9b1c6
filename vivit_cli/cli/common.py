"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import json
import sys
from typing import Any, List, Optional

import typer

SetOption = typer.Option(None, "--set", "-s", help="Override a config key, e.g. --set model.size=B (repeatable).")
PresetOption = typer.Option(None, "--preset", help="Scale preset: cpu (default), smoke, paper.")
JsonOption = typer.Option(False, "--json", help="Print one JSON object instead of a table.")


def build_config(sets: Optional[List[str]], preset: Optional[str] = None):
    from vivit_cli import config

    return config.build(sets or [], preset=preset)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def console():
    """stdout: the terminal's width, or unwrapped when piped or redirected (`vivit status | cat`)."""
    from vivit_cli import term

    return term.console()


def err_console():
    from vivit_cli import term

    return term.console(stderr=True)
