"""`cbuild place`: place split jobs' unplaced exports (folders), or explain where wheel files
belong (`--explain WHEEL...`, read-only).

Folders (`cbuild wheel --unplaced DIR`'s): each package version's wheels from all of them are
decided together, as one `--all-targets` run decides them, and placed under the wheelhouse
lock. Exit status: 0 all placed; 6 a package refused (the others are placed); 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from builder.cli.common import AllOpt, JsonOpt, TargetOpt, err, fail, print_error
from builder.errors import CbuildError, ConfigError, PlacementError
from builder.wheelhouse import placement

_Inputs = Annotated[
    list[Path],
    typer.Argument(
        help="Folders written by `cbuild wheel --unplaced DIR` (searched to any depth), or, "
        "with --explain, wheel files.",
        show_default=False,
    ),
]
_Stack = Annotated[
    str | None,
    typer.Option(help="Stack whose rules apply to wheel files (default: the manifest's)."),
]


def place_cmd(
    inputs: _Inputs,
    wheelhouse: Annotated[Path, typer.Option(help="Wheelhouse root.")] = Path("wheelhouse"),
    force: Annotated[bool, typer.Option(help="Replace wheels that already exist.")] = False,
    strict: Annotated[
        bool, typer.Option(help="Refuse a package any of whose wheels was not tested.")
    ] = False,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain", help="Say where each wheel goes and why, with the ISA scan's figures."
        ),
    ] = False,
    target: TargetOpt = None,
    all_targets: AllOpt = False,
    stack: _Stack = None,
    json_out: JsonOpt = False,
) -> None:
    """Place the wheels of split jobs (folders) as one run would; or explain where wheel
    files belong (--explain WHEEL..., nothing copied)."""
    files = [p for p in inputs if p.is_file()]
    if files and len(files) == len(inputs):
        _explain_files(files, wheelhouse, stack, explain, json_out)
        return
    if files:
        fail(
            ConfigError(
                f"{files[0]} is a file among folders",
                fix="pass export folders to place them, or only wheel files with --explain",
            )
        )
    from builder.targets.model import all_targets as every_target
    from builder.targets.model import resolve
    from builder.workflows.assemble import assemble

    try:
        expected = [t.id for t in (every_target() if all_targets else resolve(target or []))]
        results = assemble(
            inputs, wheelhouse.resolve(), force=force, strict=strict, expected=expected
        )
    except CbuildError as exc:
        fail(exc)
    if json_out:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    for r in results:
        if not json_out:
            err.print(f"[bold]{escape(r.package)} {escape(r.version)}[/]")
            for line in placement.explain(r.decisions, figures=explain):
                err.print(f"  {escape(line)}")
            for p in r.placed:
                print(p)
        if r.error:
            print_error(f"{r.package} {r.version}: {r.error}", r.fix)
    if any(r.error for r in results):
        raise typer.Exit(PlacementError.exit_code)


def _explain_files(
    wheels: list[Path], wheelhouse: Path, stack: str | None, explain: bool, json_out: bool
) -> None:
    from builder.wheels import info as wheelinfo

    if not explain:
        fail(
            ConfigError(
                "wheel files are only explained (`cbuild place --explain WHEEL...`); placing "
                "takes the folders of `cbuild wheel --unplaced DIR`",
                fix="add --explain, or pass export folders",
            )
        )
    rows: list[dict[str, Any]] = []
    code = 0
    for path in wheels:
        try:
            result = wheelinfo.explain_placement(path, wheelhouse, stack)
        except CbuildError as exc:
            code = max(code, exc.exit_code)
            print_error(exc.message, exc.fix)
            rows.append({"path": str(path), "error": exc.message, "fix": exc.fix})
            continue
        rows.append(result.as_dict())
        if not json_out:
            print(result.text())
    if json_out:
        print(json.dumps(rows, indent=2))
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("place")(place_cmd)
