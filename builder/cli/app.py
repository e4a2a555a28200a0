"""The `cbuild` command line: thin, every command calls one service function."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from builder.errors import CbuildError, ConfigError, EngineError
from builder.progress import TargetProgress
from builder.recipes.recipe import BUILTIN_RECIPES
from builder.targets import model as targets_mod

app = typer.Typer(
    help="Containerized, reproducible wheel builder for HPC wheelhouses.",
    no_args_is_help=True,
    add_completion=False,
)
images_app = typer.Typer(help="Build, list and render the target images.", no_args_is_help=True)
app.add_typer(images_app, name="images")

# Messages are never wrapped (logs and tests read them); tables get room when not on a terminal.
err = Console(
    stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
TargetOpt = Annotated[
    list[str] | None, typer.Option("--target", "-t", help="Target id (repeatable).")
]
AllOpt = Annotated[bool, typer.Option("--all-targets", help="Every target of the provider.")]


def _fail(exc: CbuildError) -> None:
    err.print(f"[bold red]error:[/] {escape(exc.message)}")
    if exc.fix:
        err.print(f"  [bold]fix:[/] {escape(exc.fix)}")
    raise typer.Exit(exc.exit_code)


def _pick_targets(target: list[str] | None, all_targets: bool) -> list[targets_mod.Target]:
    if all_targets:
        return targets_mod.all_targets()
    if not target:
        raise ConfigError(
            "no target given", fix="pass --target ID (see `cbuild targets`) or --all-targets"
        )
    return targets_mod.resolve(target)


def _progress(tid: str, msg: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    err.print(f"[dim]{stamp}[/] [cyan]{tid or 'cbuild'}[/] {escape(msg)}")


EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        envvar="CBUILD_ENGINE",
        help="docker (Docker or Podman), apptainer, or auto: the first that answers.",
    ),
]


def _engine(name: str = "docker"):
    from builder.engines.docker import DockerEngine

    if name == "docker":
        return DockerEngine()
    from builder.engines.apptainer import ApptainerEngine

    if name == "apptainer":
        return ApptainerEngine()
    if name != "auto":
        raise ConfigError(f"unknown engine {name!r}", fix="use --engine docker|apptainer|auto")
    # Docker first: where both answer it is today's default; HPC nodes usually have only Apptainer.
    tried = []
    for kind in (DockerEngine, ApptainerEngine):
        try:
            engine = kind()
        except CbuildError as exc:
            tried.append(f"{kind.name}: {exc.message}")
            continue
        err.print(f"engine: {kind.name} (auto: {engine.describe()})")
        return engine
    raise EngineError(
        "no engine answers (auto): " + "; ".join(tried),
        fix="start Podman/Docker (ci/setup.sh) or install Apptainer (README, Apptainer)",
    )


@app.command("targets")
def targets_cmd(
    json_out: JsonOpt = False,
    matrix: Annotated[str | None, typer.Option(help="Print a CI matrix: 'github'.")] = None,
) -> None:
    """List the targets: ids, CPU levels, folders and flags."""
    ts = targets_mod.all_targets()
    if matrix is not None:
        if matrix != "github":
            _fail(ConfigError(f"unknown matrix format {matrix!r}", fix="use --matrix github"))
        print(json.dumps(targets_mod.github_matrix(ts), separators=(",", ":")))
        return
    if json_out:
        print(json.dumps([t.as_dict() for t in ts], indent=2))
        return
    table = Table("id", "CPU level", "python", "wheelhouse folder", "CFLAGS")
    for t in ts:
        table.add_row(t.id, t.cpu_level.name, t.python, t.folder, t.compiler_flags()["CFLAGS"])
    Console().print(table)


@images_app.command("build")
def images_build(
    target: TargetOpt = None,
    all_targets: AllOpt = False,
    json_out: JsonOpt = False,
    engine_name: EngineOpt = "auto",
) -> None:
    """Build target images (an image whose definition is unchanged is never rebuilt)."""
    from builder.images.spec import spec_for

    try:
        ts = _pick_targets(target, all_targets or not target)
        engine = _engine(engine_name)
        rows = []
        for t in ts:
            spec = spec_for(t)
            existed = engine.image_exists(spec.tag)
            _progress(t.id, "up to date" if existed else f"building {spec.tag}")
            tag = engine.build_image(spec, lambda m, i=t.id: _progress(i, m))
            rows.append(
                {
                    "target": t.id,
                    "tag": tag,  # the engine's name for it: an image tag, or a SIF's path
                    "id": engine.image_id(tag),
                    "built": not existed,
                }
            )
    except CbuildError as exc:
        _fail(exc)
    if json_out:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['target']:24} {r['tag']}  {'built' if r['built'] else 'up to date'}")


@images_app.command("list")
def images_list(json_out: JsonOpt = False, engine_name: EngineOpt = "auto") -> None:
    """List cbuild's images in the engine."""
    try:
        rows = _engine(engine_name).list_images()
    except CbuildError as exc:
        _fail(exc)
    if json_out:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['target']:24} {r['tag']}  {r['id'][:19]}")


@images_app.command("render")
def images_render(
    out: Annotated[Path, typer.Option(help="Folder of rendered definitions.")] = Path("images"),
    check: Annotated[bool, typer.Option(help="Only report drift; exit 1 if any.")] = False,
) -> None:
    """Write each target's Containerfile under images/<target>/ (what a person builds by hand)."""
    from builder.images.spec import rendered_files

    drift = []
    for rel, text in rendered_files(targets_mod.all_targets()).items():
        path = out / rel
        if path.exists() and path.read_text() == text:
            continue
        drift.append(str(path))
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for p in drift:
        print(("drifted: " if check else "wrote ") + p)
    if check and drift:
        raise typer.Exit(1)


@app.command("wheel")
def wheel_cmd(
    package: str,
    version: str,
    target: TargetOpt = None,
    all_targets: AllOpt = False,
    wheelhouse: Annotated[Path, typer.Option(help="Wheelhouse root.")] = Path("wheelhouse"),
    recipes: Annotated[Path, typer.Option(help="Recipes folder.")] = BUILTIN_RECIPES,
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
    json_out: JsonOpt = False,
    engine_name: EngineOpt = "auto",
) -> None:
    """Build, test and export PACKAGE VERSION for the chosen targets."""
    from builder.pipeline.job import Pipeline, WheelRequest, default_cache
    from builder.workflows import recursive as recursive_mod

    try:
        ts = _pick_targets(target, all_targets)
        req = WheelRequest(
            package,
            version,
            tuple(ts),
            wheelhouse.resolve(),
            (cache or default_cache()).resolve(),
            recipes.resolve(),
            force,
            strict,
            sdist,
            jobs=max(1, jobs if jobs is not None else min(os.cpu_count() or 1, len(ts))),
            rebuild=rebuild,
            ccache=ccache,
        )
        with TargetProgress(err, [t.id for t in ts]) as progress:
            outcome = recursive_mod.build(
                Pipeline(_engine(engine_name), progress),
                req,
                recursive=recursive,
                warn=lambda line: err.print(f"[yellow]warning:[/] {escape(line)}"),
            )
        report = outcome.report
    except CbuildError as exc:
        _fail(exc)
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
    if explain or not report.ok:
        for r in report.results:
            if r.reason:
                err.print(f"  {r.target.id}: {escape(r.reason)}")
    for p in report.placed:
        print(p)


# Command groups kept in modules of their own; each adds its commands to `app`.
# (one import and one register() call per module, here)
from builder.cli import inspect as cli_inspect  # noqa: E402

cli_inspect.register(app)
from builder.cli import recipes as cli_recipes  # noqa: E402

cli_recipes.register(app)
from builder.cli import batch as cli_batch  # noqa: E402

cli_batch.register(app)
from builder.cli import reproduce as cli_reproduce  # noqa: E402

cli_reproduce.register(app)


def main() -> None:  # pragma: no cover - console script entry
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
