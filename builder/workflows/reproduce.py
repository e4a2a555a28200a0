"""`cbuild run` and `cbuild shell`, the plan: a command, or a shell, in exactly the image a
wheel was built and tested in, with wheels from the wheelhouse installed in a fresh venv.

A user's "it crashes on the older nodes" becomes `cbuild run WHEEL --cpu x86-64-v3 -- python
repro.py`: the image comes from the wheel's manifest (rebuilt from the recorded definition when
it is gone), the wheel and its dependencies come from the wheelhouse folders a node's pip reads
(level, then the stack's generic folder, then pure wheels), and `--cpu` runs Python under QEMU
with exactly that level's CPU features, as the pipeline's own test does. Everything here is
decided on the host; `workflows.run` runs the plan.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion

from builder.cache import Cache
from builder.engines.base import Engine, Mount
from builder.errors import ConfigError, EngineError
from builder.images.paths import (
    QEMU_PATH,
    RUN_ENV,
    STORE_DIR,
    WHEELHOUSE_DIR,
    WITH_DIR,
)
from builder.images.scripts import under_level
from builder.images.spec import ImageSpec
from builder.manifest import Manifest, ManifestError, manifest_path
from builder.progress import StepProgress
from builder.providers import spec_for
from builder.recipes import Recipe, load_recipe, recipe_path
from builder.targets.cputest import usable_qemu
from builder.targets.levels import Level, host_has, level
from builder.targets.model import Target
from builder.targets.model import resolve as resolve_targets
from builder.wheelhouse import layout
from builder.wheels.compare import check_wheel

SETUP_FAILED = "::cbuild-setup-failed::"
SETUP_LOG = "/tmp/cbuild-setup.log"


# ---------------------------------------------------------------------------- manifests


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
) -> Manifest:
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
        manifest = Manifest.load(mpath)
    except ManifestError as exc:
        raise ManifestError(exc.message, fix=exc.fix or how) from exc
    if missing := manifest.missing(needed):
        raise ManifestError(
            f"manifest {mpath} lacks {', '.join(missing)}, which {purpose} needs",
            fix="it was written by an older cbuild; rebuild the wheel with this one "
            "(`cbuild wheel ... --rebuild --force`) to get a complete manifest",
        )
    if manifest.wheel not in (None, wheel.name):
        raise ManifestError(
            f"manifest {mpath} describes {manifest.wheel}, not {wheel.name}",
            fix="keep each manifest beside its own wheel, named <wheel>.json",
        )
    return manifest


def recipe_from_manifest(
    manifest: Manifest, folder: Path, fallback: Path | None = None
) -> tuple[Recipe, Path, list[str]]:
    """The recipe the wheel was built with, written back from the manifest into `folder`
    (`<name>.toml` and its patches), loaded for the manifest's version; with notes.

    A manifest without the recipe (older cbuild) falls back to `fallback`'s recipe, which may
    have changed since: the build key comparison tells."""
    name, version = manifest.package, manifest.version
    recorded = manifest.recipe
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
    engine: Engine, spec: ImageSpec, progress: StepProgress, recorded: Manifest | None = None
) -> tuple[str, list[str]]:
    """The image to run in and notes on how exact it is.

    With a manifest (`recorded`): its own image when the engine still has it; else the image
    is built from the recorded definition (the target and the recipe's apt packages), which is
    the recorded one only when the spec hashes agree, and that is said either way."""
    notes: list[str] = []
    if recorded is None:
        return engine.build_image(spec, progress), notes
    tag, spec_hash, image_id = recorded.image, recorded.image_spec_hash, recorded.image_id
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
    return list(layout.search_folders(target))


def wheelhouse_root(wheel: Path, target: Target) -> Path | None:
    """The wheelhouse a placed wheel lies in, from the folder it is in."""
    return layout.wheelhouse_root(wheel, target.stack)


def supported_tags(target: Target) -> set[str]:
    """Wheel tags the target's Python takes (its site platform and manylinux up to its glibc)."""
    return {str(t) for t in layout.accepted_tags(target)}


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
        found = []
        for whl in (path / n for n in layout.wheel_names(path)):
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
    qemu, why = usable_qemu()
    if qemu is None:
        what, _, fix = why.partition("; fix: ")
        raise EngineError(f"--cpu {lv.name} needs a static QEMU user mode: {what}", fix=fix)
    return lv


def plan_run(
    engine: Engine,
    what: str,
    with_: list[str],
    *,
    cpu: str | None = None,
    wheelhouse: Path | None = None,
    cache: Path,
    progress: StepProgress,
) -> RunPlan:
    """Resolve TARGET|WHEEL, the --with items and --cpu; build or find the image."""
    emulated = cpu_level(cpu) if cpu else None
    notes: list[str] = []
    installs: list[str] = []
    with_files: list[Path] = []
    path = Path(what)
    if what.endswith(".whl") or path.is_file():
        manifest = load_manifest(path, NEEDED_TO_RUN, "`cbuild run WHEEL`", RUN_OTHERWISE)
        target = manifest.built_target()
        with tempfile.TemporaryDirectory(prefix="cbuild-recipe-") as tmp:
            if manifest.package is not None and manifest.version is not None:
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
    store = Cache(cache).wheels
    store.mkdir(parents=True, exist_ok=True)
    mounts.append(Mount(store.resolve(), STORE_DIR))
    find_links.append(STORE_DIR)
    if emulated is not None:
        mounts.append(Mount(usable_qemu()[0], QEMU_PATH))
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
    try:
        recorded = Manifest.load(manifest_path(wheel)).image_spec_hash
    except ManifestError:
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
    ]
    body = [f"export VIRTUAL_ENV={RUN_ENV} PATH={RUN_ENV}/bin:$PATH", "cd /tmp", '"$@"', ""]
    if plan.qemu_cpu:  # every process of the command under QEMU, the setup natively
        return "\n".join([*lines, *under_level(plan.qemu_cpu, "\n".join(body)), ""])
    return "\n".join([*lines, *body])


__all__ = [
    "NEEDED_TO_REBUILD",
    "NEEDED_TO_RUN",
    "RunPlan",
    "check_wheel",
    "cpu_level",
    "find_in_wheelhouse",
    "image_for_target",
    "load_manifest",
    "plan_run",
    "recipe_from_manifest",
    "run_script",
    "search_folders",
]
