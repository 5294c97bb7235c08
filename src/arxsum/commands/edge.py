"""The error edge every arxsum command shares: our exceptions become one line and an exit code."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer
from typer.core import TyperCommand

from arxsum.errors import ArxsumError, OptionsError, describe

if TYPE_CHECKING:
    from rich.console import Console


class errors_to_exit_codes:
    """ArxsumError -> one line on stderr and exit 2 (bad option) or 1; Ctrl-C -> 130; a bug -> one
    line and exit 1.

    ARXSUM_DEBUG=1 (and running under pytest) lets the exception through with its traceback.
    """

    def __init__(self, console: Console) -> None:
        self.console = console

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if error is None or isinstance(error, (typer.Exit, typer.Abort, SystemExit)) or \
                type(error).__module__.startswith(("typer", "click")):
            return False  # exits and usage errors: click reports them itself
        debug = os.environ.get("ARXSUM_DEBUG", "") not in ("", "0")
        if isinstance(error, KeyboardInterrupt):
            self.console.print("arxsum: interrupted", markup=False, highlight=False)
            raise typer.Exit(130)
        if isinstance(error, ArxsumError) and not debug:
            self.console.print(f"arxsum: error: {error}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(error, OptionsError) else 1)
        if debug or "PYTEST_CURRENT_TEST" in os.environ or not isinstance(error, Exception):
            return False  # a bug: its traceback, under tests and ARXSUM_DEBUG=1
        message = describe(error)[:300]
        self.console.print(f"arxsum: error: internal error: {message}; "
                           "ARXSUM_DEBUG=1 shows the traceback", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)


class PanelCommand(TyperCommand):
    """Help as plain text that reads at 80 columns: options in sections (their `rich_help_panel`),
    flags without a value placeholder, values with a short metavar (N, X, TEXT, PATH, a|b|c)."""

    def format_options(self, ctx, formatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                section = "Arguments"
            else:
                section = getattr(param, "rich_help_panel", None) or "Options"
            sections.setdefault(section, []).append((option_names(param), record[1]))
        for section, rows in sections.items():
            with formatter.section(section):
                formatter.write_dl(rows)


# value names that say more than a type would, by parameter name (every command's)
METAVARS = {"model": "NAME|DIR", "device": "DEVICE", "output": "FILE", "output_dir": "DIR", "cache_dir": "DIR",
            "glob": "PATTERN", "ray_address": "ADDRESS", "timeout": "SECONDS", "predictions": "PRED",
            "article_field": "FIELD", "abstract_field": "FIELD", "prediction_field": "FIELD"}


def option_names(param) -> str:
    """`--name METAVAR`, `--flag / --no-flag`, `-f, --format a|b` or an argument's `NAME...`."""
    if param.param_type_name == "argument":
        name = param.metavar or param.name.upper()
        return name if param.metavar or param.nargs == 1 else f"{name}..."
    names = ", ".join(sorted(param.opts, key=len))
    if param.secondary_opts:
        names += " / " + ", ".join(param.secondary_opts)
    if getattr(param, "is_flag", False):
        return names
    return f"{names} {param.metavar or METAVARS.get(param.name) or metavar_of(param)}"


def metavar_of(param) -> str:
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices or ())
    annotation = desc.annotation
    if desc.is_list:
        (annotation,) = getattr(annotation, "__args__", (str,))
    if desc.is_path:
        return "PATH"
    return {int: "N", float: "X"}.get(annotation, "TEXT")
