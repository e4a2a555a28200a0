"""`cbuild recipe ...` and `cbuild wheel-edit`: thin commands over builder.recipes and
builder.wheels.edit. `register(app)` adds them to the main Typer app (see builder/cli/app.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from builder.cli.common import JsonOpt, RecipesOpt, err, fail, print_error, site_config
from builder.data import data_path
from builder.errors import CbuildError, ConfigError
from builder.recipes import (
    check_recipe,
    load_recipe,
    new_recipe_text,
    recipe_path,
    schema_text,
    to_toml,
)

SCHEMA_FILE = "recipe.schema.json"  # shipped as package data, for editors

recipe_app = typer.Typer(
    help="Check, create, show and import package recipes.", no_args_is_help=True
)


def _recipe_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.glob("*.toml"))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"{p}: no such file or folder", fix="pass recipe files or folders")
    return files


@recipe_app.command("check")
def check_cmd(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Recipe files or folders (default: the configured recipe folders)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check recipes strictly; exit 2 when any has a mistake."""
    try:
        files = _recipe_files(paths or [d for d in site_config().recipe_dirs if d.is_dir()])
    except CbuildError as exc:
        fail(exc)
    from builder.providers import PROVIDERS

    # What the code supports: fields no code acts on yet, provider keys no provider honours.
    honoured = frozenset().union(*(make().honours for make in PROVIDERS.values()))
    report = []
    for f in files:
        errors = check_recipe(f, honoured)
        report.append(
            {
                "path": str(f),
                "ok": not errors,
                "errors": [
                    {"message": e.message, "fix": e.fix, "line": getattr(e, "line", None)}
                    for e in errors
                ],
            }
        )
    bad = [r for r in report if not r["ok"]]
    if json_out:
        print(json.dumps(report, indent=2))
    else:
        for r in report:
            if r["ok"]:
                print(f"ok      {r['path']}")
            for e in r["errors"]:
                print_error(e["message"], e["fix"])
        n = sum(len(r["errors"]) for r in bad)
        err.print(
            f"{len(report)} recipe(s) checked, "
            + (f"{n} mistake(s) in {len(bad)}" if bad else "no mistakes")
        )
    if bad:
        raise typer.Exit(2)


@recipe_app.command("new")
def new_cmd(
    name: str,
    recipes: Annotated[
        Path | None,
        typer.Option(
            "--recipes",
            help="Folder to write to (default: the first configured recipe folder, else "
            "./recipes).",
        ),
    ] = None,
    import_name: Annotated[str | None, typer.Option(help="Module to import in the test.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing recipe.")] = False,
) -> None:
    """Write a starting recipe <folder>/<name>.toml."""
    path = recipe_path(name, recipes or site_config().new_recipe_dir)
    if path.exists() and not force:
        fail(ConfigError(f"{path} exists", fix="edit it, or pass --force to start over"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new_recipe_text(name, import_name))
    errors = check_recipe(path)
    if errors:  # a name the template cannot serve, e.g. an invalid module name
        path.unlink()
        fail(errors[0])
    print(path)


@recipe_app.command("show")
def show_cmd(
    name: str,
    version: str,
    target: Annotated[str | None, typer.Option("--target", "-t", help="Target id.")] = None,
    recipes: RecipesOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the recipe of NAME resolved for VERSION (and a target's overrides)."""
    from builder.targets.model import resolve

    try:
        t = resolve([target])[0] if target else None
        recipe = load_recipe(name, version, site_config(recipes=recipes).recipe_dirs, t)
    except CbuildError as exc:
        fail(exc)
    data = recipe.as_dict()
    if json_out:
        print(json.dumps(data, indent=2))
        return
    resolved = data.pop("resolved_for")
    src = recipe.path or "no recipe file: the defaults"
    print(f"# {name} {version} for {resolved['target'] or 'any target'}, from {src}")
    print(to_toml(data), end="")


@recipe_app.command("schema")
def schema_cmd(
    out: Annotated[
        Path | None, typer.Option(help="Write it to this file (default: print it).")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(help="Only report drift of --out (default: the shipped copy); exit 1 if any."),
    ] = False,
) -> None:
    """Print or write the JSON schema of the recipe format (generated from the model)."""
    text = schema_text()
    if out is None and not check:
        print(text, end="")
        return
    out = out or data_path(SCHEMA_FILE)
    if out.exists() and out.read_text() == text:
        return
    if check:
        print(f"drifted: {out}")
        raise typer.Exit(1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")


@recipe_app.command("import-legacy")
def import_legacy_cmd(
    configs: Annotated[list[Path], typer.Argument(help="Legacy config/<pkg>.sh files.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder to write recipes to (default: the first configured recipe folder, "
            "else ./recipes)."
        ),
    ] = None,
    patches: Annotated[
        Path | None,
        typer.Option(help="The legacy patches folder (default: patches/ beside config/)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace existing recipes.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Convert legacy shell configs to recipes; list, per file, what could not be converted."""
    from builder.recipes.legacy import import_configs

    try:
        out = out or site_config().new_recipe_dir
        results = import_configs(configs, out, patches_dir=patches, force=force)
    except CbuildError as exc:
        fail(exc)
    if json_out:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for r in results:
            state = "whole" if r.whole else f"partly ({len(r.skipped)} left)"
            print(f"{r.config} -> {r.recipe or '(not written)'}: converted {state}")
            for s in r.skipped:
                print(f"    {f'line {s.line}' if s.line else 'file'}: {s.text}")
                print(f"        not converted: {s.reason}")
            for s in r.notes:
                print(f"    line {s.line}: {s.text}\n        note: {s.reason}")
            for e in r.errors:
                print_error(e, None)
        whole = sum(r.whole for r in results)
        err.print(f"{whole} of {len(results)} config(s) converted whole")
    if any(r.errors for r in results):
        raise typer.Exit(2)


def wheel_edit_cmd(
    wheels: Annotated[list[Path], typer.Argument(help="Wheels to edit.")],
    add_req: Annotated[
        list[str] | None, typer.Option("--add-req", help="Add a requirement (PEP 508).")
    ] = None,
    remove_req: Annotated[
        list[str] | None,
        typer.Option("--remove-req", help="Remove requirements by name or pattern ('nvidia-*')."),
    ] = None,
    update_req: Annotated[
        list[str] | None,
        typer.Option(
            "--update-req", help="Replace a requirement by name, markers kept; 'a->b' renames."
        ),
    ] = None,
    add_tag: Annotated[
        list[str] | None, typer.Option("--add-tag", help="Local version tag, put first.")
    ] = None,
    local_label: Annotated[
        str | None, typer.Option("--local-label", help="Site label, appended when missing.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write edited wheels here; originals untouched.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace a wheel that has the new name.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Edit wheels' requirements and local version; RECORD rewritten, the original replaced only
    once the new file is complete (a manifest beside it follows)."""
    from builder.wheels.edit import WheelEdits, edit_wheel

    edits = WheelEdits(
        add=tuple(add_req or ()),
        remove=tuple(remove_req or ()),
        update=tuple(update_req or ()),
        tags=tuple(add_tag or ()),
        label=local_label,
    )
    try:
        if not edits:
            raise ConfigError(
                "no edit given",
                fix="pass --add-req, --remove-req, --update-req, --add-tag or --local-label",
            )
        edits.check()
    except CbuildError as exc:
        fail(exc)
    results, failed = [], 0
    for w in wheels:
        try:
            r = edit_wheel(w, edits, out, force=force).as_dict()
        except CbuildError as exc:
            failed += 1
            r = {"wheel": str(w), "error": exc.message, "fix": exc.fix}
        results.append(r)
        if json_out:
            continue
        if "error" in r:
            print_error(r["error"], r["fix"])
            continue
        print(r["result"] if r["changed"] else f"{r['wheel']} (unchanged)")
        for c in r["changes"]:
            err.print(f"    {escape(c)}")
        for n in r["notes"]:
            err.print(f"    [yellow]note:[/] {escape(n)}")
    if json_out:
        print(json.dumps(results, indent=2))
    if failed:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.add_typer(recipe_app, name="recipe")
    app.command("wheel-edit")(wheel_edit_cmd)
