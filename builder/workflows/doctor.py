"""`cbuild doctor`: the site's troubleshooting page as checks, each a finding with its fix.
What cbuild needs (an engine, room in the cache), what decides how wheels are tested here
(QEMU, the host's CPU level), what else the host offers (Apptainer, Slurm, the CVMFS stacks), and
what in a user's home and environment makes builds and tests go wrong (`~/.local` installs,
PYTHONPATH/PIP_*/PYTHONUSERBASE, pip's config and its cache of wheels it built)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from builder.config import Config
from builder.errors import CbuildError

State = Literal["ok", "info", "warn", "missing"]
LOW_SPACE = 10 * 2**30  # below this a build of a large package can fail half-way
NO_SPACE = 2**30
# Variables that reach pip or Python in a user's build or test and change what it installs.
LEAKY_ENV = ("PYTHONPATH", "PYTHONUSERBASE", "PYTHONHOME", "PYTHONSTARTUP")
# pip settings that change how pip talks or prints, not which files it installs.
QUIET_PIP_ENV = frozenset(
    {
        "PIP_CERT",
        "PIP_DEFAULT_TIMEOUT",
        "PIP_DISABLE_PIP_VERSION_CHECK",
        "PIP_NO_COLOR",
        "PIP_NO_INPUT",
        "PIP_PROGRESS_BAR",
        "PIP_RETRIES",
        "PIP_ROOT_USER_ACTION",
        "PIP_TIMEOUT",
    }
)


@dataclass(frozen=True)
class Check:
    area: str  # engine, qemu, cpu, slurm, space, cvmfs, environment
    state: State
    detail: str
    fix: str | None = None
    needed: bool = False  # missing and needed: cbuild cannot work here (exit 1)

    @property
    def failed(self) -> bool:
        return self.state == "missing" and self.needed

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def run_checks(
    cfg: Config, env: Mapping[str, str] | None = None, cvmfs: dict[str, Any] | None = None
) -> list[Check]:
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    return [
        *engine_checks(cfg.engine.value),
        qemu_check(),
        *cpu_checks(),
        slurm_check(),
        *space_checks(cfg),
        *cvmfs_checks(cvmfs or cvmfs_status()),
        *environment_checks(home, env),
    ]


# --- the engine ---------------------------------------------------------------------------------


def engine_checks(engine: str = "auto") -> list[Check]:
    """The Docker/Podman socket that answers and Apptainer; the one `engine` names (the
    configuration's; auto: either) is needed."""
    from builder.engines.docker import DockerEngine, candidate_sockets, connect

    docker, tried = None, []
    for url in candidate_sockets():
        try:
            docker = Check(
                "engine", "ok", f"{DockerEngine(connect([url], 15)).describe()} at {url}"
            )
            break
        except CbuildError as exc:
            tried.append(exc.message.removeprefix("no container engine answers; tried "))
    apptainer = None
    if shutil.which("apptainer"):
        apptainer = Check("engine", "ok", f"apptainer {_version(['apptainer', '--version'])}")
    no_docker = Check(
        "engine",
        "missing",
        f"no Docker/Podman socket answers (tried {', '.join(tried)})",
        "start Podman's API service (`podman system service --time=0 "
        "unix:///run/podman/podman.sock`, as ci/setup.sh does) or Docker, or set DOCKER_HOST "
        "to its socket",
        needed=engine == "docker" or (engine == "auto" and apptainer is None),
    )
    no_apptainer = Check(
        "engine",
        "missing" if engine == "apptainer" else "info",
        "no apptainer on PATH",
        "install Apptainer >= 1.1 (README, Apptainer)",
        needed=engine == "apptainer" or (engine == "auto" and docker is None),
    )
    return [docker or no_docker, apptainer or no_apptainer]


# --- QEMU and the CPU -------------------------------------------------------------------------


def level_program(code: bytes) -> bytes:
    """A minimal static x86-64 ELF that runs `code` and then exits 0 (no compiler needed)."""
    code += b"\xb8\x3c\x00\x00\x00\x31\xff\x0f\x05"  # mov eax, 60; xor edi, edi; syscall
    base, start = 0x400000, 64 + 56
    size = start + len(code)
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, 0x3E, 1, base + start, 64, 0, 0, 64, 56, 1, 0, 0, 0
    )
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return header + program + code


# vpaddd ymm0,ymm0,ymm0 (AVX2); vfmadd231ps ymm0,ymm0,ymm0 (FMA); andn eax,eax,eax (BMI1):
# x86-64-v3 instructions that x86-64-v2 CPUs lack.
V3_CODE = b"\xc5\xfd\xfe\xc0" + b"\xc4\xe2\x7d\xb8\xc0" + b"\xc4\xe2\x78\xf2\xc0"


def qemu_check() -> Check:
    from builder.targets.cputest import SIGILL_EXIT_CODES, usable_qemu
    from builder.targets.levels import level

    qemu, why = usable_qemu()
    fix = "apt-get install qemu-user-static (x86-64-v3 wheels are then tested at exactly v3)"
    if qemu is None:
        return Check("qemu", "missing", why.split("; fix:")[0], fix, needed=True)
    with tempfile.TemporaryDirectory() as tmp:
        prog = Path(tmp) / "v3"
        prog.write_bytes(level_program(V3_CODE))
        prog.chmod(0o755)
        v3 = level("x86-64-v3").qemu_cpu
        runs = subprocess.run([str(qemu), "-cpu", v3, str(prog)], capture_output=True, timeout=60)
        below = subprocess.run([str(qemu), "-cpu", "qemu64", str(prog)], capture_output=True)
    if runs.returncode != 0:
        return Check(
            "qemu",
            "missing",
            f"{qemu} did not run an x86-64-v3 program at exactly v3 (exit {runs.returncode})",
            fix,
            needed=True,
        )
    if below.returncode not in SIGILL_EXIT_CODES:
        return Check(
            "qemu",
            "warn",
            f"{qemu} ran a v3 program on a plain x86-64 CPU model (exit {below.returncode}): "
            "its CPU models do not hold back instructions, so a pass proves less",
            "use Debian's qemu-user-static (7.2 or later)",
        )
    return Check(
        "qemu",
        "ok",
        f"{qemu}: static; an x86-64-v3 program runs at exactly v3 and dies of SIGILL on a "
        "plain x86-64 CPU model",
    )


def cpu_checks() -> list[Check]:
    """Which of each stack's levels can be tested on this host, and how."""
    from builder.targets.cputest import plan_here
    from builder.targets.levels import level
    from builder.targets.model import load_stack, stack_names

    out = []
    for name in stack_names():
        stack = load_stack(name)
        for lv in stack.levels:  # generic promises the stack's baseline level
            plan = plan_here(level(stack.baseline_level if lv == "generic" else lv))
            state: State = "ok" if plan.exact else ("info" if plan.runs else "warn")
            how = {"qemu": "tested", "native": "tested", "none": "not tested:"}[plan.mode]
            fix = None
            if not plan.runs:
                fix = "test it on a host that can (the CI's AVX-512 runners for x86-64-v4)"
            out.append(Check("cpu", state, f"{name} {lv}: {how} {plan.reason}", fix))
    return out


# --- what else the host offers ------------------------------------------------------------------


def _version(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(no answer: {exc})"
    return (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr) else "?"


def slurm_check() -> Check:
    if not shutil.which("sbatch"):
        return Check("slurm", "info", "no sbatch on PATH (only needed for cbuild batch --slurm)")
    version = _version(["sbatch", "--version"])
    try:
        res = subprocess.run(
            ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20
        )
        parts = res.stdout.split() if res.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        res, parts = None, []
    if not parts:
        why = (res.stderr.strip().splitlines() or ["no answer"])[0] if res else "no answer"
        return Check(
            "slurm",
            "warn",
            f"{version}, but the controller does not answer: {why}",
            "start slurmctld/slurmd (ci/slurm-setup.sh) or run on the cluster's login node",
        )
    return Check("slurm", "ok", f"{version}; partitions {', '.join(parts)}")


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def space_checks(cfg: Config) -> list[Check]:
    out = []
    for what, path in (("cache", cfg.cache.value), ("wheelhouse", cfg.wheelhouse.value)):
        where = _existing(path)
        free = shutil.disk_usage(where).free
        gib = f"{free / 2**30:.1f} GiB free"
        writable = os.access(where, os.W_OK)
        if not writable:
            out.append(
                Check(
                    "space",
                    "missing",
                    f"{what} {path}: {where} is not writable",
                    f"make it writable, or choose another {what} (cbuild.toml, "
                    f"CBUILD_{what.upper()} or --{what})",
                    needed=True,
                )
            )
        elif free < NO_SPACE or free < LOW_SPACE:
            out.append(
                Check(
                    "space",
                    "missing" if free < NO_SPACE else "warn",
                    f"{what} {path}: {gib}",
                    f"free space there, or move the {what} (cbuild.toml {what} = ...)",
                    needed=free < NO_SPACE,
                )
            )
        else:
            out.append(Check("space", "ok", f"{what} {path}: {gib}"))
    return out


def cvmfs_status() -> dict[str, object]:
    """Each stack's CVMFS status (mounted, revision) and what `--provider auto` picks here."""
    from builder.providers import CvmfsProvider, choose
    from builder.targets.model import load_stack, stack_names

    cvmfs = CvmfsProvider()
    stacks = [
        cvmfs.status(st) for n in stack_names() if cvmfs.name in (st := load_stack(n)).providers
    ]
    auto, why = choose("auto")
    return {"cvmfs": stacks, "provider_auto": auto, "why": why}


def cvmfs_checks(status: dict[str, Any]) -> list[Check]:
    """Whether each stack's real repository is mounted from CVMFS (and its revision), which
    `--provider cvmfs|auto` needs; and what `--provider auto` picks here."""
    out = []
    for s in status["cvmfs"]:
        if s["mounted"]:
            rev = s["revision"] or "unknown (no attribute)"
            out.append(
                Check(
                    "cvmfs",
                    "ok",
                    f"stack {s['stack']} ({s['repository']}): mounted at {s['host_path']}, "
                    f"revision {rev}",
                )
            )
        else:
            out.append(
                Check(
                    "cvmfs",
                    "info",
                    f"stack {s['stack']} ({s['repository']}): not mounted (no {s['profile']})",
                    "only --provider cvmfs needs it: install the CVMFS client and mount "
                    f"{s['repository']}",
                )
            )
    auto, why = status["provider_auto"], status["why"]
    out.append(Check("cvmfs", "info", f"--provider auto picks {auto} here ({why})"))
    return out


# --- the user's home and environment -----------------------------------------------------------


def environment_checks(home: Path, env: Mapping[str, str]) -> list[Check]:
    out = []
    user_site = Path(env.get("PYTHONUSERBASE") or home / ".local") / "lib"
    for site in sorted(user_site.glob("python3*/site-packages")):
        dists = sorted(p.name for p in site.glob("*.dist-info"))
        if dists:
            shown = ", ".join(d.removesuffix(".dist-info") for d in dists[:5])
            out.append(
                Check(
                    "environment",
                    "warn",
                    f"{len(dists)} package(s) installed with pip --user in {site} ({shown}"
                    f"{', ...' if len(dists) > 5 else ''}): Python puts them ahead of a "
                    "wheelhouse's in every interpreter outside a venv, so a test can import "
                    "them instead of the wheel",
                    f"python3 -m pip uninstall {' '.join(d.split('-')[0] for d in dists[:5])} "
                    "(or move the folder away); export PYTHONNOUSERSITE=1 meanwhile",
                )
            )
    for var in LEAKY_ENV:
        if env.get(var):
            out.append(
                Check(
                    "environment",
                    "warn",
                    f"{var}={env[var]} is set: it reaches the Python of a build or test and "
                    "changes what it imports",
                    f"unset {var} (put it in a module or a venv instead)",
                )
            )
    for var in sorted(k for k in env if k.startswith("PIP_") and k not in QUIET_PIP_ENV):
        out.append(
            Check(
                "environment",
                "warn",
                f"{var}={env[var]} is set: pip reads it in every build and install, so the "
                "wheels chosen differ from the wheelhouse's plain `pip install`",
                f"unset {var}",
            )
        )
    for conf in (home / ".config" / "pip" / "pip.conf", home / ".pip" / "pip.conf"):
        if conf.is_file():
            out.append(
                Check(
                    "environment",
                    "warn",
                    f"{conf} exists: pip reads it in every install (an index, find-links, --user)",
                    f"move {conf} away, or check that it does not point pip elsewhere",
                )
            )
    cache = Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "pip"
    built = list((cache / "wheels").rglob("*.whl")) if (cache / "wheels").is_dir() else []
    if built:
        names = sorted({w.name.split("-")[0] for w in built})
        out.append(
            Check(
                "environment",
                "warn",
                f"pip's cache {cache} holds {len(built)} wheel(s) pip built itself "
                f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): pip installs "
                "them again instead of the wheelhouse's, whatever CPU or stack they were built "
                "for",
                "pip cache purge; and install with --no-cache-dir "
                "(or export PIP_NO_CACHE_DIR=1 in the site's module)",
            )
        )
    if not out:
        out.append(
            Check(
                "environment",
                "ok",
                "no ~/.local installs, no PYTHONPATH/PIP_*/PYTHONUSERBASE, no pip.conf, no "
                "wheels pip built in its cache",
            )
        )
    return out
