"""`cbuild wheel PACKAGE VERSION`: build, test and place a package version for targets."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from builder.cli.common import (
    AllOpt,
    AllowHostNetworkOpt,
    EngineOpt,
    JsonOpt,
    ProviderOpt,
    PythonOpt,
    RecipesOpt,
    TargetOpt,
    engine_for,
    err,
    fail,
    pick_targets,
    site_config,
)
from builder.errors import CbuildError, ConfigError
from builder.progress import TargetProgress


def wheel_cmd(
    package: str,
    version: str,
    target: TargetOpt = None,
    all_targets: AllOpt = False,
    python: PythonOpt = None,
    wheelhouse: Annotated[Path | None, typer.Option(help="Wheelhouse root.")] = None,
    recipes: RecipesOpt = None,
    cache: Annotated[Path | None, typer.Option(help="Cache and work folder.")] = None,
    force: Annotated[bool, typer.Option(help="Replace wheels that already exist.")] = False,
    strict: Annotated[bool, typer.Option(help="Fail when a wheel could not be tested.")] = False,
    explain: Annotated[bool, typer.Option(help="Say why each wheel went where it went.")] = False,
    sdist: Annotated[Path | None, typer.Option(help="Build this local sdist, not PyPI's.")] = None,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="Targets at once (default: the cores).")
    ] = None,
    rebuild: Annotated[
        bool, typer.Option(help="Build even when a run with the same inputs is recorded.")
    ] = False,
    ccache: Annotated[
        bool, typer.Option(help="A compiler cache per target, kept in the cache folder.")
    ] = False,
    recursive: Annotated[
        bool,
        typer.Option(
            help="First build, in dependency order, the dependencies the wheelhouse lacks "
            "for the targets (without it they are listed)."
        ),
    ] = False,
    unplaced: Annotated[
        Path | None,
        typer.Option(
            help="A split job: write the tested wheels and manifests to this folder, "
            "unplaced; `cbuild place DIR... --wheelhouse W` places the jobs' folders together."
        ),
    ] = None,
    json_out: JsonOpt = False,
    engine_name: EngineOpt = None,
    provider: ProviderOpt = None,
    allow_host_network: AllowHostNetworkOpt = False,
) -> None:
    """Build, test and export PACKAGE VERSION for the chosen targets."""
    from builder.pipeline.job import Pipeline
    from builder.pipeline.model import WheelRequest
    from builder.workflows import recursive as recursive_mod

    cfg = site_config(
        wheelhouse=wheelhouse,
        recipes=recipes,
        cache=cache,
        jobs=jobs,
        engine=engine_name,
        provider=provider,
    )
    jobs = cfg.jobs.value
    try:
        ts = pick_targets(target, all_targets, cfg.provider.value, python)
        if all_targets:  # every target of the recipe's accelerators (default: cpu)
            from builder.recipes import load_recipe

            recipe = load_recipe(package, version, cfg.recipe_dirs)
            ts = [t for t in ts if recipe.builds_for_accelerator(t.accelerator)]
        if unplaced is not None and recursive:
            raise ConfigError(
                "--unplaced with --recursive: the dependencies would have to be placed "
                "before the package's build can use them",
                fix="place the dependencies first (a run without --unplaced), then split",
            )
        req = WheelRequest(
            package,
            version,
            tuple(ts),
            cfg.wheelhouse.value,
            cfg.cache.value,
            cfg.recipe_dirs,
            force,
            strict,
            sdist,
            jobs=max(1, jobs if jobs is not None else min(os.cpu_count() or 1, len(ts))),
            rebuild=rebuild,
            ccache=ccache,
            unplaced=unplaced.resolve() if unplaced is not None else None,
        )
        with TargetProgress(err, [t.id for t in ts]) as progress:
            outcome = recursive_mod.build(
                Pipeline(
                    engine_for(cfg.engine.value, allow_host_network=allow_host_network), progress
                ),
                req,
                recursive=recursive,
                warn=lambda line: err.print(f"[yellow]warning:[/] {escape(line)}"),
            )
        report = outcome.report
    except CbuildError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err.print("[bold red]interrupted:[/] containers removed, nothing exported")
        raise typer.Exit(130) from None
    if json_out:
        print(json.dumps(outcome.as_dict(), indent=2))
    else:
        for dep in outcome.dependencies:  # built first, for --recursive
            _summary(dep, explain)
        _summary(report, explain)
    if not report.ok:
        err.print(f"[bold red]error:[/] {escape(report.error or '')}")
        raise typer.Exit(report.exit_code)


def _summary(report, explain: bool) -> None:
    table = Table(
        "target",
        "status",
        "tested",
        "placed",
        "time",
        "sha256",
        title=f"{report.package} {report.version}",
    )
    for r in report.results:
        table.add_row(
            r.target.id,
            r.status,
            r.test_detail.splitlines()[0] if r.test_detail else r.test_how,
            r.placed or "-",
            f"{sum(r.seconds.values()):.0f} s",
            r.sha256[:12] or "-",
        )
    err.print(table, soft_wrap=False)
    if explain or not report.ok:  # a reason several targets share once, with their ids
        from builder.pipeline.model import grouped

        for reason, ids in grouped([r for r in report.results if r.reason], lambda r: r.reason):
            err.print(f"  {', '.join(ids)}: {escape(reason)}")
    for p in report.placed:
        print(p)


def register(app: typer.Typer) -> None:
    app.command("wheel")(wheel_cmd)
