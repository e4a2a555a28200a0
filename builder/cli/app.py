"""The `cbuild` command line: the Typer app, one module per command group registered on it.
Commands are thin: each calls one service function (builder.workflows, builder.pipeline)."""

from __future__ import annotations

import sys

import typer

from builder.cli import (
    batch,
    config,
    doctor,
    inspect,
    place,
    recipes,
    report,
    reproduce,
    targets,
    wheel,
)

app = typer.Typer(
    help="Containerized, reproducible wheel builder for HPC wheelhouses.",
    no_args_is_help=True,
    # `cbuild --install-completion` / `--show-completion` (bash, zsh, fish; README).
    add_completion=True,
)
# The order of `cbuild --help`.
for module in (targets, wheel, inspect, place, report, recipes, batch, reproduce, config, doctor):
    module.register(app)


def main() -> None:  # pragma: no cover - console script entry
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
