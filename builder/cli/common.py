"""What every command module shares: the console, error printing, progress lines, the common
options and the engine they name. Command modules import from here, never from builder.cli.app."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from builder.config import Config, load_config
from builder.engines import Engine, get_engine
from builder.engines.base import ALLOW_HOST_NETWORK_ENV
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
AllOpt = Annotated[
    bool,
    typer.Option(
        "--all-targets",
        help="Every level x every Python the provider can build here (those it cannot are "
        "listed with why).",
    ),
]
PythonOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--python",
        help="Python version (repeatable): narrows --all-targets; with --target, that level "
        "on each of them. Default: each target's own (an id without -pyXY: the stack's first).",
    ),
]
ProviderOpt = Annotated[
    str | None,
    typer.Option(
        "--provider",
        help="Where the toolchain comes from: standalone (an image with the stack's ABI floor), "
        "cvmfs (the site's stack from /cvmfs, loaded with Lmod), or auto (cvmfs where the "
        "stack's profile is here). Same target ids and wheelhouse folders. Default: the "
        "configuration's (cbuild config show).",
    ),
]
ENGINE_HELP = "docker (Docker or Podman), apptainer, or auto: the first that answers."


def engine_option(extra_help: str = "") -> typer.models.OptionInfo:
    return typer.Option(
        "--engine",
        help=ENGINE_HELP + (f" {extra_help}" if extra_help else ""),
    )


EngineOpt = Annotated[str | None, engine_option()]
RecipesOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--recipes",
        help="Recipes folder, searched before cbuild's built-in recipes (repeatable, in "
        "order). Default: the configuration's (cbuild config show).",
    ),
]
AllowHostNetworkOpt = Annotated[
    bool,
    typer.Option(
        "--allow-host-network",
        envvar=ALLOW_HOST_NETWORK_ENV,
        help="Where Apptainer refuses --network none, run steps with the host's network "
        "(each manifest records network_isolated: false) instead of failing.",
    ),
]


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


def site_config(**flags: Any) -> Config:
    """The configuration (cbuild.toml, CBUILD_*) with these flags over it; a mistake exits."""
    try:
        return load_config().with_flags(**flags)
    except CbuildError as exc:
        fail(exc)


def engine_for(name: str | None = None, *, allow_host_network: bool = False) -> Engine:
    """The engine named by --engine, else the configuration's; `auto` says which it picked."""
    name = name or site_config().engine.value
    if allow_host_network:  # the engine reads it; batch's tasks inherit it
        os.environ[ALLOW_HOST_NETWORK_ENV] = "1"
    return get_engine(name, lambda msg: err.print(escape(msg)))


def pick_targets(
    target: list[str] | None,
    all_targets: bool,
    provider: str | None = None,
    python: list[str] | None = None,
) -> list[targets_mod.Target]:
    """The targets named, built by `provider` (`auto` resolved here; the run says which).
    --all-targets leaves out, with a line saying why, those the provider cannot build here;
    a target named by id that it cannot build is an error."""
    from builder.providers import choose, unbuildable

    provider = provider or site_config().provider.value
    name, why = choose(provider)
    if provider != "standalone":
        say("", f"provider {name} ({why})")
    pythons = tuple(dict.fromkeys(python or ()))
    if all_targets:
        targets_mod.check_pythons(pythons, name)
        ts = targets_mod.all_targets(name, accelerators=None, pythons=pythons or None)
    elif not target:
        raise ConfigError(
            "no target given", fix="pass --target ID (see `cbuild targets`) or --all-targets"
        )
    else:
        ts = targets_mod.resolve(target, name, pythons)
    skipped = unbuildable(ts)
    for t, exc in skipped.items():
        if not all_targets:  # named: the user asked for exactly this one
            raise ConfigError(f"{t.id} is not buildable here: {exc.message}", fix=exc.fix)
        say(t.id, f"not buildable here: {exc.message}")
    if not (kept := [t for t in ts if t not in skipped]):
        exc = next(iter(skipped.values()))
        raise ConfigError("no target of the selection is buildable here", fix=exc.fix)
    return kept
