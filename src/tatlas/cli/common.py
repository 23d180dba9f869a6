"""What every ``tatlas`` command shares: expected problems read as one line, never a traceback.

Every command group of the CLI is a :class:`Commands`: a command that raises an expected
problem (bad input, a missing file, a missing optional package, a diverged run, no memory
for what was asked) prints ``error: <one line>`` on stderr and exits 2. Anything else is a defect:
typer prints a short traceback without local variables; ``tatlas --debug ...`` (or
``TATLAS_DEBUG=1``) shows the full Python traceback of every error, expected ones included.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

__all__ = ["Commands", "LazyConsole", "debug_enabled", "fail", "freeze_imports", "new_app", "one_line"]


def freeze_imports() -> None:
    """Call once a command has imported what it runs on (torch and the rest): moves every object
    alive now out of the garbage collector's sight (``gc.freeze``). After ``import torch`` there are
    ~170,000 of them, and each full collection, which loading a model's hundreds of tensors
    triggers, walks them all (~80 ms here): loading Whisper tiny.en took 0.22-0.26 s in a fresh
    process without this and 0.14-0.17 s with it."""
    import gc

    gc.freeze()


class LazyConsole:
    """rich's ``Console``, made on first use: importing rich costs ~25 ms, which commands that print
    no rich text (``tatlas transcribe`` to a pipe) need not pay at start-up."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs, self._console = kwargs, None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._kwargs)
        return getattr(self._console, name)


class _Diverged(Exception):
    """Stands in for :class:`tatlas.train.TrainingDiverged` until the trainer is imported (the CLI
    starts without torch)."""


def _expected() -> tuple[type[BaseException], ...]:
    """The problems a user can cause: bad values, files, packages, memory, a diverged run."""
    import sys

    trainer = sys.modules.get("tatlas.train.trainer")
    return (ValueError, OSError, ImportError, MemoryError,
            getattr(trainer, "TrainingDiverged", _Diverged))


def one_line(error: BaseException) -> str:
    """The error's message on one line (a missing module names the package to install)."""
    if isinstance(error, ModuleNotFoundError) and error.name:
        return f"this needs the package {error.name.split('.')[0]!r}, which is not installed ({error})"
    if isinstance(error, MemoryError):
        return f"not enough memory for what was asked{': ' + str(error) if str(error) else ''}"
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def debug_enabled(ctx: typer.Context | None = None) -> bool:
    if os.environ.get("TATLAS_DEBUG", "").strip() not in ("", "0"):
        return True
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and root.params.get("debug"))


class Commands(TyperGroup):
    """A command group whose commands fail with one line for every expected problem."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):  # (click's own classes, or typer's copies of them from 0.26)
            raise
        except Exception as e:
            if debug_enabled(ctx):
                raise
            kinds = {c.__name__ for c in type(e).__mro__}  # click's exceptions, or typer's vendored copies
            if "UsageError" in kinds:
                # a bad option of a subcommand (click's UsageError, or typer's vendored copy of it): one
                # line too, with where to look
                sub = getattr(e, "ctx", None)
                where = f" (see {sub.command_path} --help)" if sub is not None else ""
                fail(" ".join(e.format_message().split()) + where)
            if isinstance(e, _expected()) and "ClickException" not in kinds:
                fail(one_line(e))
            raise


def new_app(help: str, **kwargs: Any) -> typer.Typer:
    """A ``tatlas`` command group: one-line errors, no locals in tracebacks."""
    return typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True, help=help,
                       pretty_exceptions_show_locals=False, **kwargs)
