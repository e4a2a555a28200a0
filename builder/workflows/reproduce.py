"""`cbuild run` and `cbuild shell`: a command, or a shell, in exactly the image a wheel was built
and tested in, with wheels from the wheelhouse installed in a fresh venv.

A user's "it crashes on the older nodes" becomes `cbuild run WHEEL --cpu x86-64-v3 -- python
repro.py`: the image comes from the wheel's manifest (rebuilt from the recorded definition when
it is gone), the wheel and its dependencies come from the wheelhouse folders a node's pip reads
(level, then the stack's generic folder, then pure wheels), and `--cpu` runs Python under QEMU
with exactly that level's CPU features, as the pipeline's own test does.

Installing is offline first (wheelhouse and cbuild's wheel store); only what they lack is
fetched from PyPI, in a separate networked container, into the store. The command itself runs
with the network off unless asked.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging import tags as ptags
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion

from builder.engines.base import Engine, Mount, RunResult, RunSpec
from builder.errors import CbuildError, ConfigError, EngineError
from builder.images import scripts as steps
from builder.images.spec import QEMU_PATH, ImageSpec, spec_for
from builder.recipes.recipe import Recipe, load_recipe, recipe_path
from builder.targets.cputest import (
    GLIBC_ISA_MESSAGE,
    QEMU_SIGILL_MESSAGE,
    SIGILL_EXIT_CODES,
    CpuTestPlan,
    interpret,
    python_shim_script,
    qemu_binary,
)
from builder.targets.levels import Level, host_has, level
from builder.targets.model import Target, load_stack
from builder.targets.model import resolve as resolve_targets
from builder.wheels import info as wheelinfo

RUN_ENV = "/cbuild/runenv"
WHEELHOUSE_DIR = "/cbuild/wheelhouse"  # /<i>: the wheelhouse folders, in search order
WITH_DIR = "/cbuild/with"  # /<i>: folders of wheel files given by path
STORE_DIR = "/cbuild/store"  # cbuild's wheel store (what the pipeline fetched from PyPI)
FETCHED_DIR = "/cbuild/fetched"  # this run's downloads, when the first install lacked some
SETUP_FAILED = "::cbuild-setup-failed::"
SETUP_LOG = "/tmp/cbuild-setup.log"
# pip's words for "no file satisfies this here": the cue to fetch from PyPI and try again.
_MISSING_SIGNS = ("No matching distribution found", "Could not find a version that satisfies")

Progress = Callable[[str], None]


class SetupError(CbuildError):
    """cbuild could not prepare the run (image, venv, install); the command did not run.
    125, as `docker run` uses for its own failures: any other status is the command's."""

    exit_code = 125


class ManifestError(CbuildError):
    """A wheel's manifest is missing, unreadable or lacks what a command needs."""

    exit_code = 2


# ---------------------------------------------------------------------------- manifests


def manifest_path(wheel: Path) -> Path:
    return wheel.with_name(wheel.name + ".json")


def check_wheel(wheel: Path) -> None:
    """A readable wheel: a zip whose members all stay inside it (wheelinfo's checks)."""
    if wheel.suffix != ".whl" and wheel.is_file():
        raise ConfigError(f"{wheel} is not a wheel (no .whl suffix)", fix="pass a .whl file")
    wheelinfo._open_zip(wheel).close()


# What each use of a manifest reads from it.
NEEDED_TO_RUN = ("target", "image_spec_hash")
NEEDED_TO_REBUILD = ("package", "version", "target", "lock", "sha256", "wheel")
RUN_OTHERWISE = "or name the target yourself: cbuild run TARGET --with WHEEL -- CMD"
REBUILD_OTHERWISE = "`cbuild inspect WHEEL` works without one"


# What the manifest's fields are, for messages about missing ones.
_FIELD_WORDS = {
    "lock": "lock (the sdist and build inputs, each with its sha256)",
    "target": "target (stack, CPU level, Python)",
    "image_spec_hash": "image_spec_hash (the image definition)",
}


def load_manifest(
    wheel: Path, needed: tuple[str, ...], purpose: str, otherwise: str = ""
) -> dict[str, Any]:
    """`<wheel>.json`, checked to hold `needed`; every problem says what is missing and how to
    get it (`otherwise`: what the user can do without one)."""
    check_wheel(wheel)
    mpath = manifest_path(wheel)
    how = (
        f"cbuild writes {mpath.name} beside each wheel it places (`cbuild wheel PKG VERSION "
        "--target ID`); copy it from the wheelhouse the wheel came from, or build the wheel again "
        "with cbuild" + (f"; {otherwise}" if otherwise else "")
    )
    if not mpath.is_file():
        raise ManifestError(
            f"{wheel.name} has no manifest ({mpath} does not exist): {purpose} needs the "
            "manifest's " + ", ".join(_FIELD_WORDS.get(k, k) for k in needed),
            fix=how,
        )
    try:
        data = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"manifest {mpath} is unreadable: {exc}", fix=how) from exc
    if not isinstance(data, dict):
        raise ManifestError(f"manifest {mpath} is not a JSON object", fix=how)
    if missing := [k for k in needed if k not in data]:
        raise ManifestError(
            f"manifest {mpath} lacks {', '.join(missing)}, which {purpose} needs",
            fix="it was written by an older cbuild; rebuild the wheel with this one "
            "(`cbuild wheel ... --rebuild --force`) to get a complete manifest",
        )
    if data.get("wheel") not in (None, wheel.name):
        raise ManifestError(
            f"manifest {mpath} describes {data['wheel']}, not {wheel.name}",
            fix="keep each manifest beside its own wheel, named <wheel>.json",
        )
    return data


def target_from_manifest(manifest: dict[str, Any], key: str = "target") -> Target:
    """The recorded target, field by field (its Python too, not the provider's default)."""
    t = manifest[key]
    try:
        target = Target(
            load_stack(t["stack"]),
            t["level"],
            t.get("accelerator", "cpu"),
            t.get("python", "3.11"),
            t.get("provider", "standalone"),
        )
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"the manifest's target is incomplete: {t!r} ({exc})") from exc
    if target.id != t.get("id", target.id):
        raise ManifestError(f"the manifest's target id {t['id']} does not match its fields")
    return target


def recipe_from_manifest(
    manifest: dict[str, Any], folder: Path, fallback: Path | None = None
) -> tuple[Recipe, Path, list[str]]:
    """The recipe the wheel was built with, written back from the manifest into `folder`
    (`<name>.toml` and its patches), loaded for the manifest's version; with notes.

    A manifest without the recipe (older cbuild) falls back to `fallback`'s recipe, which may
    have changed since: the build key comparison tells."""
    name, version = manifest["package"], manifest["version"]
    recorded = manifest.get("recipe")
    notes: list[str] = []
    recipes = folder / "recipes"
    (recipes / "patches").mkdir(parents=True, exist_ok=True)
    if isinstance(recorded, dict) and "file" in recorded:
        if recorded["file"] is not None:
            recipe_path(name, recipes).write_text(recorded["file"])
        for pname, text in (recorded.get("patches") or {}).items():
            dest = recipes / "patches" / pname
            if dest.resolve().parent != (recipes / "patches").resolve():
                raise ManifestError(f"the manifest's patch name {pname!r} leaves its folder")
            dest.write_text(text, errors="surrogateescape")
    elif fallback is not None and recipe_path(name, fallback).is_file():
        shutil.copyfile(recipe_path(name, fallback), recipe_path(name, recipes))
        if (fallback / "patches").is_dir():
            shutil.copytree(fallback / "patches", recipes / "patches", dirs_exist_ok=True)
        notes.append(
            f"the manifest does not record the recipe (older cbuild): using "
            f"{recipe_path(name, fallback)}, as it is now"
        )
    else:
        notes.append("the manifest does not record the recipe: the defaults apply")
    return load_recipe(name, version, recipes), recipes, notes


# ---------------------------------------------------------------------------- images


def image_for_target(
    engine: Engine, spec: ImageSpec, progress: Progress, recorded: dict[str, Any] | None = None
) -> tuple[str, list[str]]:
    """The image to run in and notes on how exact it is.

    With a manifest (`recorded`): its own image when the engine still has it; else the image
    is built from the recorded definition (the target and the recipe's apt packages), which is
    the recorded one only when the spec hashes agree, and that is said either way."""
    notes: list[str] = []
    if recorded is None:
        return engine.build_image(spec, progress), notes
    tag, spec_hash, image_id = (
        recorded.get("image"),
        recorded.get("image_spec_hash"),
        recorded.get("image_id"),
    )
    if tag and engine.image_exists(tag):
        if image_id and engine.image_id(tag) != image_id:
            notes.append(
                f"image {tag} exists but is not the one the wheel was built in (id "
                f"{engine.image_id(tag)[:19]}, recorded {image_id[:19]}): it was rebuilt from the "
                "same definition since; system packages may differ"
            )
        return tag, notes
    if spec.hash == spec_hash:
        notes.append(
            f"the recorded image {tag or '?'} no longer exists: rebuilding it from the recorded "
            f"definition (spec hash {spec_hash}); system packages come from today's mirror"
        )
    else:
        notes.append(
            f"the recorded image {tag or '?'} no longer exists and its definition cannot be "
            f"rebuilt: this cbuild defines the target's image as spec hash {spec.hash}, the "
            f"manifest records {spec_hash} (the stack data, the image renderer or the recipe's "
            f"apt packages changed since). Using {spec.tag}: NOT the image the wheel was built in"
        )
    built = engine.build_image(spec, progress)
    if image_id and engine.image_exists(built) and engine.image_id(built) != image_id:
        notes.append(f"the rebuilt image's id differs from the recorded {image_id[:19]}")
    return built, notes


# ---------------------------------------------------------------------------- wheelhouse


def search_folders(target: Target) -> list[str]:
    """The wheelhouse folders a node of this target reads, most specific first."""
    st = target.stack
    folders = [target.folder, st.generic_folder, st.pure_folder]
    return list(dict.fromkeys(folders))


def wheelhouse_root(wheel: Path, target: Target) -> Path | None:
    """The wheelhouse a placed wheel lies in, from the folder it is in."""
    parent = wheel.resolve().parent
    st = target.stack
    for folder in (
        target.folder,
        st.generic_folder,
        st.pure_folder,
        *(st.folder_for_level(lv) for lv in st.levels),
    ):
        parts = Path(folder).parts
        if parent.parts[-len(parts) :] == parts:
            return Path(*parent.parts[: -len(parts)])
    return None


def supported_tags(target: Target) -> set[str]:
    """Wheel tags the target's Python takes (its site platform and manylinux up to its glibc)."""
    major, minor = (int(x) for x in target.python.split(".")[:2])
    prov = target.stack.providers.get(target.provider, {})
    glibc_minor = int(str(prov.get("glibc", "2.17")).split(".")[1])
    plats = [
        "linux_x86_64",
        *(f"manylinux_2_{m}_x86_64" for m in range(glibc_minor, 4, -1)),
        "manylinux2014_x86_64",
        "manylinux2010_x86_64",
        "manylinux1_x86_64",
    ]
    out = {str(t) for t in ptags.cpython_tags((major, minor), platforms=plats)}
    out |= {
        str(t) for t in ptags.compatible_tags((major, minor), f"cp{major}{minor}", platforms=plats)
    }
    return out


def find_in_wheelhouse(
    requirement: Requirement, wheelhouse: Path, target: Target
) -> tuple[Path | None, list[str]]:
    """The wheel a node would install for `requirement`: the first folder (search order) with
    a matching wheel, its highest version there. Returns it (or None) and the folders looked at."""
    wanted = canonicalize_name(requirement.name)
    ok_tags = supported_tags(target)
    looked = []
    for folder in search_folders(target):
        path = wheelhouse / folder
        looked.append(folder)
        if not path.is_dir():
            continue
        found = []
        for whl in path.glob("*.whl"):
            try:
                name, version, _, wtags = parse_wheel_filename(whl.name)
            except (InvalidWheelFilename, InvalidVersion):
                continue
            if name != wanted or not requirement.specifier.contains(version, prereleases=True):
                continue
            if any(str(t) in ok_tags for t in wtags):
                found.append((version, whl))
        if found:
            return max(found)[1], looked
    return None, looked


# ---------------------------------------------------------------------------- the plan


@dataclass
class RunPlan:
    """Everything a run needs, decided on the host before any container starts."""

    target: Target
    image: str
    installs: list[str]  # in-container wheel paths and requirement strings, for pip
    find_links: list[str]  # in-container folders, in search order
    mounts: list[Mount]
    cpu: Level | None = None  # Python runs under QEMU with exactly this level's features
    notes: list[str] = field(default_factory=list)
    resolved: dict[str, str] = field(default_factory=dict)  # --with item -> what it resolved to
    wheelhouse: Path | None = None

    @property
    def qemu_cpu(self) -> str | None:
        return self.cpu.qemu_cpu if self.cpu else None


def cpu_level(name: str) -> Level:
    try:
        lv = level(name)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]), fix="pass a level such as x86-64-v3") from exc
    if not lv.qemu_emulable:
        raise ConfigError(
            f"--cpu {lv.name}: QEMU cannot emulate it: its TCG stops at AVX2 and raises SIGILL on "
            "every AVX-512 instruction under any CPU model, so x86-64-v4 code cannot be run "
            "under emulation",
            fix=f"run without --cpu on a host that has {lv.name} (this one "
            f"{'does' if host_has(lv) else 'does not'})",
        )
    qemu = qemu_binary()
    if qemu is None:
        raise EngineError(
            f"--cpu {lv.name} needs QEMU user mode, which is not installed",
            fix="apt-get install qemu-user-static",
        )
    if _is_dynamic(qemu):
        raise EngineError(
            f"--cpu {lv.name}: {qemu} is dynamically linked and cannot run inside the container",
            fix="apt-get install qemu-user-static (the static build)",
        )
    return lv


def _is_dynamic(binary: Path) -> bool:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with binary.open("rb") as fh:
            return any(seg["p_type"] == "PT_INTERP" for seg in ELFFile(fh).iter_segments())
    except (OSError, ELFError):
        return False


def plan_run(
    engine: Engine,
    what: str,
    with_: list[str],
    *,
    cpu: str | None = None,
    wheelhouse: Path | None = None,
    cache: Path,
    progress: Progress,
) -> RunPlan:
    """Resolve TARGET|WHEEL, the --with items and --cpu; build or find the image."""
    emulated = cpu_level(cpu) if cpu else None
    notes: list[str] = []
    installs: list[str] = []
    with_files: list[Path] = []
    path = Path(what)
    if what.endswith(".whl") or path.is_file():
        manifest = load_manifest(path, NEEDED_TO_RUN, "`cbuild run WHEEL`", RUN_OTHERWISE)
        target = target_from_manifest(manifest)
        with tempfile.TemporaryDirectory(prefix="cbuild-recipe-") as tmp:
            if "package" in manifest and "version" in manifest:
                recipe, _, rnotes = recipe_from_manifest(manifest, Path(tmp))
                apt = recipe.for_target(target).apt
            else:
                apt, rnotes = (), []
        spec = spec_for(target, apt)
        image, inotes = image_for_target(engine, spec, progress, manifest)
        notes += inotes + [n for n in rnotes if "defaults apply" not in n]
        with_files.append(path)
        if wheelhouse is None:
            wheelhouse = wheelhouse_root(path, target)
    else:
        target = resolve_targets([what])[0]
        image = engine.build_image(spec_for(target), progress)
    resolved: dict[str, str] = {}
    for item in with_:
        p = Path(item)
        if item.endswith(".whl") or p.is_file():
            check_wheel(p)
            with_files.append(p)
            resolved[item] = str(p)
            continue
        try:
            req = Requirement(item)
        except InvalidRequirement as exc:
            raise ConfigError(
                f"--with {item!r} is neither a wheel file nor a requirement: {exc}",
                fix="pass NAME==VERSION (e.g. biopython==1.85) or a path to a .whl file",
            ) from exc
        found, looked = find_in_wheelhouse(req, wheelhouse, target) if wheelhouse else (None, [])
        if found is None:
            installs.append(item)
            where = f"not in {wheelhouse} ({', '.join(looked)})" if wheelhouse else "no wheelhouse"
            resolved[item] = f"{where}: from the wheel store or PyPI"
            continue
        with_files.append(found)
        resolved[item] = str(found)
        notes += _image_note(found, spec_for(target).hash, image)
    mounts: list[Mount] = []
    find_links: list[str] = []
    if wheelhouse is not None:
        for i, folder in enumerate(search_folders(target)):
            if (wheelhouse / folder).is_dir():
                mounts.append(Mount((wheelhouse / folder).resolve(), f"{WHEELHOUSE_DIR}/{i}"))
                find_links.append(f"{WHEELHOUSE_DIR}/{i}")
    folders = list(dict.fromkeys(f.resolve().parent for f in with_files))
    for i, folder in enumerate(folders):
        mounts.append(Mount(folder, f"{WITH_DIR}/{i}"))
        find_links.append(f"{WITH_DIR}/{i}")
    installs = [
        f"{WITH_DIR}/{folders.index(f.resolve().parent)}/{f.name}" for f in with_files
    ] + installs
    store = cache / "wheels"
    store.mkdir(parents=True, exist_ok=True)
    mounts.append(Mount(store.resolve(), STORE_DIR))
    find_links.append(STORE_DIR)
    if emulated is not None:
        mounts.append(Mount(qemu_binary(), QEMU_PATH))
    return RunPlan(
        target,
        image,
        installs,
        find_links,
        mounts,
        emulated,
        notes,
        resolved,
        wheelhouse,
    )


def _image_note(wheel: Path, target_hash: str, image: str) -> list[str]:
    """A wheel built in an image of its own (a recipe's apt packages) may need those packages."""
    mpath = manifest_path(wheel)
    try:
        recorded = json.loads(mpath.read_text()).get("image_spec_hash")
    except (OSError, ValueError, AttributeError):
        return []
    if recorded and recorded != target_hash:
        return [
            f"{wheel.name} was built in an image of its own (spec hash {recorded}, the recipe's "
            f"system packages), not in {image}: `cbuild run {wheel}` runs in that one"
        ]
    return []


# ---------------------------------------------------------------------------- scripts


def run_script(plan: RunPlan, extra_find_links: tuple[str, ...] = ()) -> str:
    """The container's script: a fresh venv, an offline install (its output shown only when it
    fails), Python under QEMU when asked, then the command given as "$@" (a child of this
    shell, so a signal that kills it is reported as 128+N, SIGILL as 132)."""
    py = f"{RUN_ENV}/bin/python"
    links = " ".join(
        f"--find-links {shlex.quote(d)}" for d in [*plan.find_links, *extra_find_links]
    )
    setup = [f"python3 -m venv --without-pip {RUN_ENV}"]
    if plan.installs:
        setup.append(
            f"python3 -m pip --python {py} install --no-index {links} "
            + " ".join(shlex.quote(i) for i in plan.installs)
        )
    # The venv has no pip of its own (ensurepip costs seconds): `pip` drives the image's.
    pip_shim = f'#!/bin/sh\nexec python3 -m pip --python {py} "$@"\n'
    setup.append(f"printf '%s' {shlex.quote(pip_shim)} > {RUN_ENV}/bin/pip")
    setup.append(f"chmod +x {RUN_ENV}/bin/pip")
    lines = [
        "{ " + " && ".join(setup) + f"; }} > {SETUP_LOG} 2>&1 || "
        f"{{ echo {SETUP_FAILED}; cat {SETUP_LOG}; exit 125; }}",
        f"mkdir -p {steps.SHIM_DIR}",
    ]
    if plan.qemu_cpu:
        shim = python_shim_script(QEMU_PATH, plan.qemu_cpu, f"{RUN_ENV}/bin/python3")
        lines += [
            f"printf '%s' {shlex.quote(shim)} > {steps.SHIM_DIR}/python",
            f"chmod +x {steps.SHIM_DIR}/python && ln -sf python {steps.SHIM_DIR}/python3",
        ]
    lines += [
        f"export VIRTUAL_ENV={RUN_ENV} PATH={steps.SHIM_DIR}:{RUN_ENV}/bin:$PATH",
        "cd /tmp",
        '"$@"',
        "",
    ]
    return "\n".join(lines)


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
    from builder.pipeline.job import CA_PATH, host_ca_bundle

    ca = host_ca_bundle()
    return ((Mount(ca, CA_PATH),), {"PIP_CERT": CA_PATH}) if ca else ((), {})


def _fetch_missing(
    engine: Engine, plan: RunPlan, store: Path, dest: Path, log: Path, progress: Progress
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
            + _tail(res.output),
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
            shutil.copyfile(p, store / f".{p.name}.tmp")
            (store / f".{p.name}.tmp").replace(store / p.name)
    return fetched


def run_in_image(
    engine: Engine,
    plan: RunPlan,
    command: list[str],
    *,
    cache: Path,
    network: bool = False,
    progress: Progress,
) -> RunOutcome:
    """Run `command` as planned and return its exit status and output. The setup failing for
    want of a file fetches it and runs again (the command had not started)."""
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
        res = engine.run(spec, log)
        if SETUP_FAILED not in res.output:
            break
        setup_out = res.output.split(SETUP_FAILED, 1)[1]
        if attempt == 2 or not any(s in setup_out for s in _MISSING_SIGNS):
            raise SetupError(
                "could not set up the venv in " + plan.image + ":\n" + _tail(setup_out),
                fix=f"log: {log}",
            )
        dest = work / "fetched"
        dest.mkdir(exist_ok=True)
        fetched = _fetch_missing(engine, plan, cache / "wheels", dest, work / "fetch.log", progress)
        mounts.append(Mount(dest, FETCHED_DIR))
        extra = (FETCHED_DIR,)
    return RunOutcome(res.exit_code, res.output, exit_message(res, plan), fetched)


def exit_message(res: RunResult, plan: RunPlan) -> str | None:
    """What a non-zero exit means, in words: SIGILL and glibc's ISA refusal get the CPU story."""
    code = res.exit_code
    if code == 0:
        return None
    if plan.cpu is not None:
        verdict = interpret(code, res.output, _qemu_plan(plan.cpu), plan.cpu)
        if verdict.status == "isa-leak":
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
    return CpuTestPlan("qemu", lv.qemu_cpu, f"under QEMU with exactly {lv.name}'s features")


def _run_folder(cache: Path) -> Path:
    from builder.pipeline.job import new_workdir

    return new_workdir(cache / "runs-cmd", keep=5)


def _tail(text: str, n: int = 15) -> str:
    return "\n".join("    " + ln for ln in text.rstrip().splitlines()[-n:])


# ---------------------------------------------------------------------------- shell


def shell_argv(
    engine: Engine, plan: RunPlan, command: list[str], *, network: bool, tty: bool
) -> list[str]:
    """The engine's own command line for an interactive run of the same script: `podman run
    -it`/`docker run -it` against the engine cbuild talks to, or `apptainer exec`."""
    script = run_script(plan, (FETCHED_DIR,) if _has_fetched(plan) else ())
    inner = ["sh", "-c", script, "cbuild-shell", *command]
    if getattr(engine, "name", "") == "apptainer":
        opts = ["--containall", "--cleanenv", "--no-eval", "--pwd", "/tmp"]
        if getattr(engine, "fakeroot", False):
            opts.append("--fakeroot")
        for m in plan.mounts:
            opts += ["--bind", f"{m.host}:{m.container}" + (":ro" if m.read_only else "")]
        if not network:
            opts += ["--net", "--network", "none"]
        return ["apptainer", "exec", *opts, plan.image, *inner]
    flavour = "podman" if engine.describe().startswith("podman") else "docker"
    head = [flavour]
    url = _engine_url(engine)
    if url:
        head += ["--remote", "--url", url] if flavour == "podman" else ["-H", url]
    argv = [*head, "run", "--rm", "-i", *(["-t"] if tty else [])]
    argv += ["--network", "host" if network else "none"]
    for m in plan.mounts:
        argv += ["-v", f"{m.host}:{m.container}:{'ro' if m.read_only else 'rw'}"]
    return [*argv, plan.image, *inner]


def _has_fetched(plan: RunPlan) -> bool:
    return any(m.container == FETCHED_DIR for m in plan.mounts)


def _engine_url(engine: Engine) -> str | None:
    """The socket the Docker SDK client talks to (the CLI must use the same engine)."""
    api = getattr(getattr(engine, "client", None), "api", None)
    adapter = getattr(api, "_custom_adapter", None)
    path = getattr(adapter, "socket_path", None)
    if path:
        return f"unix://{path}"
    base = getattr(api, "base_url", "")
    return base if base.startswith(("tcp://", "unix://", "ssh://")) else None


def prepare_shell(engine: Engine, plan: RunPlan, *, cache: Path, progress: Progress) -> RunPlan:
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
            "could not set up the venv in " + plan.image + ":\n" + _tail(setup_out),
            fix=f"log: {log}",
        )
    dest = cache / "shell-fetched" / plan.target.id
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    _fetch_missing(engine, plan, cache / "wheels", dest, work / "fetch.log", progress)
    plan.mounts.append(Mount(dest.resolve(), FETCHED_DIR))
    return plan


__all__ = [
    "ManifestError",
    "cpu_level",
    "RunOutcome",
    "RunPlan",
    "SetupError",
    "find_in_wheelhouse",
    "load_manifest",
    "plan_run",
    "prepare_shell",
    "recipe_from_manifest",
    "run_in_image",
    "run_script",
    "search_folders",
    "shell_argv",
    "target_from_manifest",
]
