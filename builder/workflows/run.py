"""`cbuild run` and `cbuild shell`, running a plan (`workflows.reproduce`): installing is
offline first (wheelhouse and cbuild's wheel store); only what they lack is fetched from PyPI,
in a separate networked container, into the store. The command itself runs with the network
off unless asked.
"""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from builder.cache import Cache
from builder.engines.base import Engine, Mount, RunResult, RunSpec
from builder.errors import CbuildError, ConfigError
from builder.files import copy_atomic
from builder.images import scripts as steps
from builder.images.paths import CA_PATH, FETCHED_DIR, WHEELHOUSE_DIR, WITH_DIR
from builder.pipeline.fetch import host_ca_bundle, tail
from builder.pipeline.job import new_workdir
from builder.progress import StepProgress
from builder.targets.cputest import (
    GLIBC_ISA_MESSAGE,
    QEMU_SIGILL_MESSAGE,
    SIGILL_EXIT_CODES,
    CpuTestPlan,
    interpret,
    plan_cpu_test,
)
from builder.targets.levels import Level, host_has
from builder.workflows.reproduce import SETUP_FAILED, RunPlan, run_script

# pip's words for "no file satisfies this here": the cue to fetch from PyPI and try again.
_MISSING_SIGNS = ("No matching distribution found", "Could not find a version that satisfies")


class SetupError(CbuildError):
    """cbuild could not prepare the run (image, venv, install); the command did not run.
    125, as `docker run` uses for its own failures: any other status is the command's."""

    exit_code = 125


def _fetch_script(plan: RunPlan) -> str:
    links: list[str] = []
    for d in plan.find_links:
        links += ["--find-links", d]
    return steps.fetch_wheels_script(plan.installs, FETCHED_DIR, links)


# ---------------------------------------------------------------------------- running


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int
    output: str  # the command's stdout and stderr together
    message: str | None  # what cbuild says about the exit (a signal, SIGILL, glibc's ISA check)
    fetched: list[str] = field(default_factory=list)  # files this run had to get from PyPI


def _ca_mounts() -> tuple[tuple[Mount, ...], dict[str, str]]:
    ca = host_ca_bundle()
    return ((Mount(ca, CA_PATH),), {"PIP_CERT": CA_PATH}) if ca else ((), {})


def _fetch_missing(
    engine: Engine, plan: RunPlan, store: Path, dest: Path, log: Path, progress: StepProgress
) -> list[str]:
    """What the offline install lacked, from PyPI (network on) into `dest`; the files the
    wheelhouse does not hold are kept in the wheel store for the next run."""
    progress(f"fetching from PyPI what the wheelhouse lacks for {', '.join(plan.installs)}")
    ca, env = _ca_mounts()
    res = engine.run(
        RunSpec(
            image=plan.image,
            command=["sh", "-c", _fetch_script(plan)],
            mounts=(*plan.mounts, Mount(dest, FETCHED_DIR, read_only=False), *ca),
            env=env,
            network=True,
        ),
        log,
    )
    if not res.ok:
        raise SetupError(
            "could not install "
            + ", ".join(plan.installs)
            + " from the wheelhouse, the wheel store or PyPI:\n"
            + tail(res.output, 15),
            fix=f"check the names and versions (--with NAME==VERSION) and --wheelhouse; log: {log}",
        )
    in_wheelhouse = {
        p.name
        for m in plan.mounts
        if m.container.startswith((WHEELHOUSE_DIR, WITH_DIR))
        for p in m.host.glob("*.whl")
    }
    fetched = []
    for p in sorted(dest.glob("*.whl")):
        if p.name in in_wheelhouse:
            continue
        fetched.append(p.name)
        if not (store / p.name).exists():
            copy_atomic(p, store / p.name)
    return fetched


def run_in_image(
    engine: Engine,
    plan: RunPlan,
    command: list[str],
    *,
    cache: Path,
    network: bool = False,
    progress: StepProgress,
    stream: StepProgress | None = None,
) -> RunOutcome:
    """Run `command` as planned and return its exit status and output, fed to `stream` as it
    comes. The setup failing for want of a file fetches it and runs again (the command had not
    started, and what the failed setup printed is not streamed: the error shows it)."""
    if not command:
        raise ConfigError("no command given", fix="put the command after --: cbuild run T -- CMD")
    work = _run_folder(cache)
    log = work / "run.log"
    fetched: list[str] = []
    extra: tuple[str, ...] = ()
    mounts = list(plan.mounts)
    for attempt in (1, 2):
        spec = RunSpec(
            image=plan.image,
            command=["sh", "-c", run_script(plan, extra), "cbuild-run", *command],
            mounts=tuple(mounts),
            network=network,
        )
        res = engine.run(spec, log, stream=_unless_setup_failed(stream) if stream else None)
        if SETUP_FAILED not in res.output:
            break
        setup_out = res.output.split(SETUP_FAILED, 1)[1]
        if attempt == 2 or not any(s in setup_out for s in _MISSING_SIGNS):
            raise SetupError(
                "could not set up the venv in " + plan.image + ":\n" + tail(setup_out, 15),
                fix=f"log: {log}",
            )
        dest = work / "fetched"
        dest.mkdir(exist_ok=True)
        store = Cache(cache).wheels
        fetched = _fetch_missing(engine, plan, store, dest, work / "fetch.log", progress)
        mounts.append(Mount(dest, FETCHED_DIR))
        extra = (FETCHED_DIR,)
    return RunOutcome(res.exit_code, res.output, exit_message(res, plan), fetched)


def _unless_setup_failed(stream: StepProgress) -> StepProgress:
    """`stream`, silenced from the setup's failure marker on (the setup's output follows it)."""
    failed = False

    def feed(line: str) -> None:
        nonlocal failed
        failed = failed or line.rstrip("\n") == SETUP_FAILED
        if not failed:
            stream(line)

    return feed


def exit_message(res: RunResult, plan: RunPlan) -> str | None:
    """What a non-zero exit means, in words: SIGILL and glibc's ISA refusal get the CPU story."""
    code = res.exit_code
    if code == 0:
        return None
    if plan.cpu is not None:
        verdict = interpret(code, res.output, _qemu_plan(plan.cpu), plan.cpu)
        if verdict.status in ("isa-leak", "not-run"):  # not-run: QEMU could not be set up
            return verdict.detail
    where = "this host's CPU"
    if code in SIGILL_EXIT_CODES or QEMU_SIGILL_MESSAGE in res.output:
        lv = plan.target.cpu_level
        lacks = "" if host_has(lv) else f" (this host has not all of {lv.name})"
        return (
            f"the command died of SIGILL (illegal instruction) on {where}: the code uses "
            f"instructions this CPU lacks{lacks}"
        )
    if GLIBC_ISA_MESSAGE in res.output:
        return f"glibc refused a library on {where}: its ELF ISA note requires a higher level"
    if code > 128:
        try:
            return f"the command was killed by {signal.Signals(code - 128).name} (exit {code})"
        except ValueError:
            return None
    return None


def _qemu_plan(lv: Level) -> CpuTestPlan:
    return plan_cpu_test(lv, frozenset(), qemu_available=True)


def _run_folder(cache: Path) -> Path:
    return new_workdir(Cache(cache).run_folders, keep=5)


# ---------------------------------------------------------------------------- shell


def shell_argv(
    engine: Engine, plan: RunPlan, command: list[str], *, network: bool, tty: bool
) -> list[str]:
    """The engine's own command line for an interactive run of the same script: `podman run
    -it`/`docker run -it` against the engine cbuild talks to, or `apptainer exec`."""
    script = run_script(plan, (FETCHED_DIR,) if _has_fetched(plan) else ())
    inner = ["sh", "-c", script, "cbuild-shell", *command]
    spec = RunSpec(plan.image, inner, tuple(plan.mounts), network=network, workdir="/tmp")
    return engine.interactive_argv(spec, tty=tty)


def _has_fetched(plan: RunPlan) -> bool:
    return any(m.container == FETCHED_DIR for m in plan.mounts)


def prepare_shell(engine: Engine, plan: RunPlan, *, cache: Path, progress: StepProgress) -> RunPlan:
    """Install once, non-interactively (fetching what is missing), so that the interactive
    container's offline install cannot fail; the plan gains the fetched folder."""
    work = _run_folder(cache)
    log = work / "prepare.log"
    res = engine.run(
        RunSpec(
            plan.image, ["sh", "-c", run_script(plan), "cbuild-shell", "true"], tuple(plan.mounts)
        ),
        log,
    )
    if SETUP_FAILED not in res.output:
        return plan
    setup_out = res.output.split(SETUP_FAILED, 1)[1]
    if not any(s in setup_out for s in _MISSING_SIGNS):
        raise SetupError(
            "could not set up the venv in " + plan.image + ":\n" + tail(setup_out, 15),
            fix=f"log: {log}",
        )
    dest = Cache(cache).shell_fetched(plan.target.id)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    _fetch_missing(engine, plan, Cache(cache).wheels, dest, work / "fetch.log", progress)
    plan.mounts.append(Mount(dest.resolve(), FETCHED_DIR))
    return plan


__all__ = [
    "RunOutcome",
    "SetupError",
    "exit_message",
    "prepare_shell",
    "run_in_image",
    "shell_argv",
]
