"""`cbuild run`, `cbuild shell`, `cbuild rebuild` and `cbuild verify`.

Exit status of `run`: the command's own; 125 when cbuild could not set the run up (image,
venv, install), as `docker run` does; 2-4 for bad input or no engine. `verify` and `rebuild`:
0 identical, 1 different, 2-5 when the rebuild could not be made (bad input, fetch, engine,
build).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from builder.cache import default_cache
from builder.cli.common import EngineOpt, JsonOpt, engine_for, err, fail, say
from builder.errors import CbuildError, ConfigError

_What = Annotated[
    str,
    typer.Argument(
        metavar="TARGET|WHEEL",
        help="A target id (`cbuild targets`), or a wheel file with its manifest beside it "
        "(<wheel>.json): then its target and image.",
        show_default=False,
    ),
]
_With = Annotated[
    list[str] | None,
    typer.Option(
        "--with",
        help="Also install this: NAME==VERSION (from the wheelhouse, in the order a node reads "
        "it: <stack>/<level>, <stack>/generic, generic; else the wheel store or PyPI) or a "
        ".whl file. Repeatable.",
        show_default=False,
    ),
]
_Cpu = Annotated[
    str | None,
    typer.Option(
        help="Run python under QEMU with exactly this CPU level's features (e.g. x86-64-v3, "
        "x86-64-v2): what a node of that level would do with the code."
    ),
]
_Wheelhouse = Annotated[
    Path | None,
    typer.Option(help="Wheelhouse root (default: the WHEEL's own, or ./wheelhouse)."),
]
_Cache = Annotated[Path | None, typer.Option(help="Cache folder (default: cbuild's).")]
_Network = Annotated[
    bool,
    typer.Option(
        help="Give the command itself the network (off, as on compute nodes; what the "
        "wheelhouse lacks is fetched in a container of its own)."
    ),
]
_Keep = Annotated[bool, typer.Option(help="Keep the rebuild's temporary folder (logs, cache).")]
_Recipes = Annotated[
    Path | None,
    typer.Option(help="Recipes folder, only for manifests that do not record their recipe."),
]
_Sdist = Annotated[
    Path | None, typer.Option(help="The locked sdist, when neither its URL nor the cache has it.")
]


def _cache(cache: Path | None) -> Path:
    return (cache or default_cache()).resolve()


def _say_plan(plan) -> None:
    for item, where in plan.resolved.items():
        err.print(f"[dim]--with {escape(item)}: {escape(where)}[/]")
    for note in plan.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")


def _plan(what, with_, cpu, wheelhouse, cache, engine_name, python=None):
    from builder.workflows import reproduce

    if cpu:  # bad input before any engine
        reproduce.cpu_level(cpu)
    if python:  # TARGET on that Python: its own id (a wheel's manifest names its Python)
        what = _on_python(what, python)
    if what.endswith(".whl") or Path(what).is_file():
        reproduce.load_manifest(
            Path(what), reproduce.NEEDED_TO_RUN, "`cbuild run WHEEL`", reproduce.RUN_OTHERWISE
        )
    engine = engine_for(engine_name)
    if wheelhouse is None and not what.endswith(".whl") and Path("wheelhouse").is_dir():
        wheelhouse = Path("wheelhouse")
    plan = reproduce.plan_run(
        engine,
        what,
        list(with_ or []),
        cpu=cpu,
        wheelhouse=wheelhouse.resolve() if wheelhouse else None,
        cache=cache,
        progress=lambda m: say("image", m),
    )
    _say_plan(plan)
    return engine, plan


def _on_python(what: str, python: str) -> str:
    from builder.targets.model import resolve

    if what.endswith(".whl") or Path(what).is_file():
        raise ConfigError(
            "--python goes with a TARGET; a wheel's manifest names the Python it was built for",
            fix=f"cbuild run {what} (its own Python), or a target id with --python {python}",
        )
    return resolve([what], pythons=(python,))[0].id


_PythonOne = Annotated[
    str | None,
    typer.Option(
        "--python",
        help="TARGET on this Python (3.13: the image with that interpreter; same as the "
        "target's -py313 id).",
    ),
]


def run_cmd(
    what: _What,
    command: Annotated[
        list[str] | None,
        typer.Argument(metavar="-- CMD...", help="The command, after --.", show_default=False),
    ] = None,
    with_: _With = None,
    cpu: _Cpu = None,
    wheelhouse: _Wheelhouse = None,
    cache: _Cache = None,
    network: _Network = False,
    engine_name: EngineOpt = None,
    python: _PythonOne = None,
) -> None:
    """Run one command in exactly the image of TARGET or WHEEL, in a fresh venv with the wheels
    installed; exit with the command's status (its output streams as it comes)."""
    from builder.workflows import run

    try:
        if not command:
            raise ConfigError(
                "no command given", fix="put it after --: cbuild run TARGET -- python -c '...'"
            )
        cache_dir = _cache(cache)
        engine, plan = _plan(what, with_, cpu, wheelhouse, cache_dir, engine_name, python)
        outcome = run.run_in_image(
            engine,
            plan,
            list(command),
            cache=cache_dir,
            network=network,
            progress=lambda m: say("run", m),
            stream=_write_now,
        )
    except CbuildError as exc:
        fail(exc)
    if outcome.fetched:
        err.print(f"[dim]fetched from PyPI: {escape(', '.join(outcome.fetched))}[/]")
    if outcome.message:
        err.print(f"[bold red]cbuild:[/] {escape(outcome.message)}")
    raise typer.Exit(outcome.exit_code)


def _write_now(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def shell_cmd(
    what: _What,
    command: Annotated[
        list[str] | None,
        typer.Argument(metavar="[-- CMD...]", help="Instead of bash.", show_default=False),
    ] = None,
    with_: _With = None,
    cpu: _Cpu = None,
    wheelhouse: _Wheelhouse = None,
    cache: _Cache = None,
    network: _Network = False,
    print_only: Annotated[
        bool, typer.Option("--print", help="Only print the engine's command line.")
    ] = False,
    engine_name: EngineOpt = None,
    python: _PythonOne = None,
) -> None:
    """An interactive shell in exactly the image of TARGET or WHEEL, with the wheels installed
    in a fresh venv: the engine's own `run -it` (printed with --print)."""
    from builder.images.paths import RUN_ENV
    from builder.workflows import run

    try:
        cache_dir = _cache(cache)
        engine, plan = _plan(what, with_, cpu, wheelhouse, cache_dir, engine_name, python)
        plan = run.prepare_shell(engine, plan, cache=cache_dir, progress=lambda m: say("shell", m))
        argv = run.shell_argv(
            engine, plan, list(command or ["bash"]), network=network, tty=sys.stdin.isatty()
        )
    except CbuildError as exc:
        fail(exc)
    if print_only:
        print(shlex.join(argv))
        return
    if shutil.which(argv[0]) is None:
        print(shlex.join(argv))
        fail(
            CbuildError(
                f"the engine's command line tool {argv[0]!r} is not on PATH",
                fix="run the command line above where it is, or use `cbuild run`",
            )
        )
    err.print(
        f"[dim]{escape(plan.image)}: venv {RUN_ENV} on PATH"
        + (f", python under QEMU as {plan.cpu.name}" if plan.cpu else "")
        + "; exit to leave[/]"
    )
    raise typer.Exit(subprocess.run(argv).returncode)


def _report_rebuild(rebuilt, comparison, json_out: bool, out: Path | None) -> None:
    for note in rebuilt.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")
    r = rebuilt.report.results[0]
    if json_out:
        print(
            json.dumps(
                {
                    "wheel": str(rebuilt.placed),
                    "rebuilt": str(out) if out else None,
                    "placed_sha256": comparison.placed_sha256,
                    "rebuilt_sha256": comparison.rebuilt_sha256,
                    "identical": comparison.identical,
                    "target": r.target.id,
                    "rebuild_test": r.status,
                    "notes": rebuilt.notes,
                    "seconds": round(rebuilt.seconds, 1),
                    "comparison": comparison.as_dict(),
                },
                indent=2,
            )
        )
        return
    print(f"placed:  {comparison.placed_sha256}  {rebuilt.placed}")
    print(f"rebuilt: {comparison.rebuilt_sha256}  {out or '(temporary)'}")
    print(f"         {r.target.id}, fresh containers and cache, {rebuilt.seconds:.0f} s")
    print(comparison.text())


def _rebuild(wheel: Path, cache, recipes, sdist, engine_name):
    from builder.workflows import reproduce, verify

    reproduce.load_manifest(  # bad input before any engine
        wheel, reproduce.NEEDED_TO_REBUILD, "a rebuild", reproduce.REBUILD_OTHERWISE
    )
    return verify.rebuild(
        engine_for(engine_name),
        wheel,
        cache=_cache(cache),
        progress=say,
        recipes=recipes,
        sdist=sdist,
    )


def rebuild_cmd(
    wheel: Annotated[Path, typer.Argument(help="A placed wheel with its manifest beside it.")],
    out: Annotated[Path, typer.Option(help="Folder for the rebuilt wheel.")] = Path("rebuilt"),
    cache: _Cache = None,
    recipes: _Recipes = None,
    sdist: _Sdist = None,
    keep: _Keep = False,
    json_out: JsonOpt = False,
    engine_name: EngineOpt = None,
) -> None:
    """Rebuild WHEEL from its manifest alone (locked inputs, recorded recipe and target) and
    print both sha256s; exit 0 when they are equal, 1 when not (`cbuild verify` says how)."""
    from builder.wheels import compare
    from builder.workflows import verify

    try:
        rebuilt = _rebuild(wheel, cache, recipes, sdist, engine_name)
        out.mkdir(parents=True, exist_ok=True)
        dest = out.resolve() / rebuilt.wheel.name
        if dest == wheel.resolve():
            raise ConfigError(
                f"--out {out} holds the placed wheel itself", fix="pass another --out folder"
            )
        shutil.copyfile(rebuilt.wheel, dest)
        comparison = compare.compare_wheels(wheel, dest)
        verify.cleanup(rebuilt, keep)
    except CbuildError as exc:
        fail(exc)
    for note in rebuilt.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")
    r = rebuilt.report.results[0]
    if json_out:
        print(
            json.dumps(
                {
                    "wheel": str(wheel),
                    "rebuilt": str(dest),
                    "placed_sha256": comparison.placed_sha256,
                    "rebuilt_sha256": comparison.rebuilt_sha256,
                    "identical": comparison.identical,
                    "target": r.target.id,
                    "notes": rebuilt.notes,
                },
                indent=2,
            )
        )
    else:
        print(f"placed:  {comparison.placed_sha256}  {wheel}")
        print(f"rebuilt: {comparison.rebuilt_sha256}  {dest}")
        print("identical" if comparison.identical else "DIFFERENT (`cbuild verify WHEEL` says how)")
    raise typer.Exit(0 if comparison.identical else 1)


def verify_cmd(
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="WHEEL | PKG VERSION",
            help="A placed wheel, or a package and version with --target.",
            show_default=False,
        ),
    ],
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="With PKG VERSION: the target id.")
    ] = None,
    wheelhouse: Annotated[Path, typer.Option(help="Wheelhouse root, with PKG VERSION.")] = Path(
        "wheelhouse"
    ),
    cache: _Cache = None,
    recipes: _Recipes = None,
    sdist: _Sdist = None,
    keep: _Keep = False,
    json_out: JsonOpt = False,
    engine_name: EngineOpt = None,
) -> None:
    """Rebuild a placed wheel in fresh containers, from another host folder and at another
    time, and compare bit for bit: "identical" (exit 0), or which files differ and how (exit 1):
    a diff of text and metadata, the differing sections of ELF files."""
    from builder.wheels import compare
    from builder.workflows import verify

    try:
        if len(args) == 1:
            if target is not None:
                raise ConfigError(
                    "--target goes with PKG VERSION; a wheel's manifest names its target",
                    fix="cbuild verify WHEEL, or cbuild verify PKG VERSION --target ID",
                )
            wheel = Path(args[0])
        elif len(args) == 2:
            if target is None:
                raise ConfigError(
                    "cbuild verify PKG VERSION needs --target ID",
                    fix=f"cbuild verify {args[0]} {args[1]} --target gentoo2023-x86-64-v3",
                )
            wheel = verify.find_placed(wheelhouse.resolve(), args[0], args[1], target)
        else:
            raise ConfigError(
                f"verify takes WHEEL or PKG VERSION, not {len(args)} arguments",
                fix="cbuild verify WHEEL, or cbuild verify PKG VERSION --target ID",
            )
        rebuilt = _rebuild(wheel, cache, recipes, sdist, engine_name)
        comparison = compare.compare_wheels(wheel, rebuilt.wheel)
        if keep:
            err.print(f"[dim]rebuild kept in {rebuilt.folder}[/]")
        verify.cleanup(rebuilt, keep)
    except CbuildError as exc:
        fail(exc)
    _report_rebuild(rebuilt, comparison, json_out, rebuilt.wheel if keep else None)
    raise typer.Exit(0 if comparison.identical else 1)


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("shell")(shell_cmd)
    app.command("rebuild")(rebuild_cmd)
    app.command("verify")(verify_cmd)
