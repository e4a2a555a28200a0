"""What every command module shares: the console, error printing, progress lines, the common
options and the engine they name. Command modules import from here, never from builder.cli.app."""

from __future__ import annotations

import sys
import time
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from builder.engines import Engine, get_engine
from builder.errors import CbuildError, ConfigError
from builder.targets import model as targets_mod

# Messages are never wrapped (logs and tests read them); tables get room when not on a terminal.
err = Console(
    stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
TargetOpt = Annotated[
    list[str] | None, typer.Option("--target", "-t", help="Target id (repeatable).")
]
AllOpt = Annotated[bool, typer.Option("--all-targets", help="Every target of the provider.")]
ProviderOpt = Annotated[
    str,
    typer.Option(
        "--provider",
        envvar="CBUILD_PROVIDER",
        help="Where the toolchain comes from: standalone (an image with the stack's ABI floor), "
        "cvmfs (the site's stack from /cvmfs, loaded with Lmod), or auto (cvmfs where the "
        "stack's profile is here). Same target ids and wheelhouse folders.",
    ),
]
ENGINE_HELP = "docker (Docker or Podman), apptainer, or auto: the first that answers."


def engine_option(extra_help: str = "") -> typer.models.OptionInfo:
    return typer.Option(
        "--engine",
        envvar="CBUILD_ENGINE",
        help=ENGINE_HELP + (f" {extra_help}" if extra_help else ""),
    )


EngineOpt = Annotated[str, engine_option()]


def print_error(message: str, fix: str | None = None) -> None:
    # Escaped: messages name TOML tables ([package]) and requirements (pkg[extra]).
    err.print(f"[bold red]error:[/] {escape(message)}")
    if fix:
        err.print(f"  [bold]fix:[/] {escape(fix)}")


def fail(exc: CbuildError) -> NoReturn:
    """Print the error and its fix, and exit with the error's exit code."""
    print_error(exc.message, exc.fix)
    raise typer.Exit(exc.exit_code)


def say(tid: str, msg: str) -> None:
    """One timestamped line for a target (or for cbuild itself when `tid` is empty)."""
    stamp = time.strftime("%H:%M:%S")
    err.print(f"[dim]{stamp}[/] [cyan]{tid or 'cbuild'}[/] {escape(msg)}")


def engine_for(name: str = "docker") -> Engine:
    """The engine named by --engine; `auto` says which it picked."""
    return get_engine(name, lambda msg: err.print(escape(msg)))


def pick_targets(
    target: list[str] | None, all_targets: bool, provider: str = "standalone"
) -> list[targets_mod.Target]:
    """The targets named, built by `provider` (`auto` resolved here; the run says which)."""
    from builder.providers import choose

    name, why = choose(provider)
    if provider != "standalone":
        say("", f"provider {name} ({why})")
    if all_targets:
        return targets_mod.all_targets(name)
    if not target:
        raise ConfigError(
            "no target given", fix="pass --target ID (see `cbuild targets`) or --all-targets"
        )
    return targets_mod.resolve(target, name)
