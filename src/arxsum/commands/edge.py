"""The error edge every arxsum command shares: our exceptions become one line and an exit code."""

from __future__ import annotations

import os

import typer
from rich.console import Console

from arxsum.errors import ArxsumError, OptionsError, describe


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
