"""`cbuild targets` and `cbuild images build|list|render`: the targets and their images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from builder.cli.common import (
    AllOpt,
    EngineOpt,
    JsonOpt,
    PythonOpt,
    TargetOpt,
    engine_for,
    fail,
    pick_targets,
    say,
)
from builder.errors import CbuildError, ConfigError
from builder.targets import model as targets_mod

images_app = typer.Typer(help="Build, list and render the target images.", no_args_is_help=True)


def targets_cmd(
    json_out: JsonOpt = False,
    matrix: Annotated[
        str | None, typer.Option(help="Print a CI matrix: 'github' (targets buildable here).")
    ] = None,
    python: PythonOpt = None,
) -> None:
    """List the targets: ids, CPU levels, Pythons, folders, flags, and whether each is
    buildable here (a Python built from source needs its tarball: a mirror or
    $CBUILD_SOURCES)."""
    from builder.providers import unbuildable

    try:
        pythons = tuple(python or ())
        targets_mod.check_pythons(pythons)
        ts = targets_mod.all_targets(accelerators=None, pythons=pythons or None)
        skipped = unbuildable(ts)
    except CbuildError as exc:
        fail(exc)
    if matrix is not None:
        if matrix != "github":
            fail(ConfigError(f"unknown matrix format {matrix!r}", fix="use --matrix github"))
        ok = [t for t in ts if t not in skipped]
        print(json.dumps(targets_mod.github_matrix(ok), separators=(",", ":")))
        return
    if json_out:
        rows = [
            {
                **t.as_dict(),
                "buildable": t not in skipped,
                "not_buildable": skipped[t].message if t in skipped else None,
            }
            for t in ts
        ]
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "CPU level", "python", "wheelhouse folder", "CFLAGS", "buildable here")
    notes: dict[str, str] = {}  # one note per reason (it is a Python's, not a level's)
    for t in ts:
        here = "yes"
        if t in skipped:
            notes.setdefault(f"Python {t.python}: {skipped[t].message}", skipped[t].fix or "")
            here = f"no [{len(notes)}]"
        table.add_row(
            t.id, t.cpu_level.name, t.python, t.folder, t.compiler_flags()["CFLAGS"], here
        )
    console = Console()
    console.print(table)
    for i, (why, fix) in enumerate(notes.items(), 1):
        console.print(f"[{i}] not buildable here: {why}\n    fix: {fix}", markup=False)


@images_app.command("build")
def images_build(
    target: TargetOpt = None,
    all_targets: AllOpt = False,
    python: PythonOpt = None,
    json_out: JsonOpt = False,
    engine_name: EngineOpt = None,
) -> None:
    """Build target images (an image whose definition is unchanged is never rebuilt; a
    Python built from source is a layer every level's image shares)."""
    from builder.providers import spec_for

    try:
        ts = pick_targets(target, all_targets or not target, python=python)
        engine = engine_for(engine_name)
        rows = []
        for t in ts:
            spec = spec_for(t)
            existed = engine.image_exists(spec.tag)
            say(t.id, "up to date" if existed else f"building {spec.tag}")
            tag = engine.build_image(spec, lambda m, i=t.id: say(i, m))
            rows.append(
                {
                    "target": t.id,
                    "tag": tag,  # the engine's name for it: an image tag, or a SIF's path
                    "id": engine.image_id(tag),
                    "built": not existed,
                }
            )
    except CbuildError as exc:
        fail(exc)
    if json_out:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['target']:24} {r['tag']}  {'built' if r['built'] else 'up to date'}")


@images_app.command("list")
def images_list(json_out: JsonOpt = False, engine_name: EngineOpt = None) -> None:
    """List cbuild's images in the engine."""
    try:
        rows = engine_for(engine_name).list_images()
    except CbuildError as exc:
        fail(exc)
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
    from builder.images.render import rendered_files

    drift = []
    for rel, text in rendered_files(targets_mod.all_targets(accelerators=None)).items():
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


def register(app: typer.Typer) -> None:
    app.add_typer(images_app, name="images")
    app.command("targets")(targets_cmd)
