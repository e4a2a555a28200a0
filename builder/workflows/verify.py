"""`cbuild rebuild` and `cbuild verify`: rebuild a placed wheel from its manifest alone and
compare the two bit for bit; on a difference, say which files differ and how.

The rebuild runs the whole pipeline in fresh containers, from a fresh temporary cache (so its
host folders differ from the original build's) at a later wall clock, with exactly the locked
inputs (`WheelRequest.pinned`: every file checked against its sha256) and the recipe the
manifest recorded. A reproducible build gives the same bytes; anything that leaks the host's
folders or the time shows up as a difference, and the comparison names the files, and for
ELF files the sections, so the cause can be found.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.cache import Cache
from builder.engines.base import Engine
from builder.errors import BuildError, ConfigError
from builder.manifest import Manifest, ManifestError, manifest_path
from builder.pipeline.job import Pipeline
from builder.pipeline.keys import target_spec
from builder.pipeline.model import RunReport, WheelRequest
from builder.progress import TargetProgressFn
from builder.sources import pypi
from builder.targets.model import Target
from builder.targets.model import resolve as resolve_targets
from builder.wheelhouse.layout import stack_folders, wheel_names
from builder.workflows.reproduce import (
    NEEDED_TO_REBUILD,
    REBUILD_OTHERWISE,
    image_for_target,
    load_manifest,
    recipe_from_manifest,
    search_folders,
    wheelhouse_root,
)

# ---------------------------------------------------------------------------- rebuilding


@dataclass
class Rebuilt:
    placed: Path
    wheel: Path  # the rebuilt wheel
    sha256: str
    manifest: Manifest
    report: RunReport
    folder: Path  # the temporary folder the rebuild ran in
    notes: list[str]
    seconds: float


def _seed(cache: Path, into: Path, lock: list[pypi.LockEntry]) -> None:
    """Copy the locked files the user's cache already has (same sha256) into the fresh cache:
    the same bytes, without the network. Nothing else comes along."""
    mine, fresh = Cache(cache), Cache(into)
    for e in lock:
        have, dest = (
            (mine.sdists, fresh.sdists) if e.kind == "sdist" else (mine.wheels, fresh.wheels)
        )
        if (have / e.filename).is_file() and pypi.sha256_of(have / e.filename) == e.sha256:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(have / e.filename, dest / e.filename)


def _build_target(manifest: Manifest) -> Target:
    """The target the wheel was really built on (a pure wheel is built once, for another)."""
    target = manifest.built_target()
    built_on = (manifest.build or {}).get("built_on")
    if built_on and built_on != target.id:
        return resolve_targets([built_on], target.provider)[0]
    return target


def rebuild(
    engine: Engine,
    wheel: Path,
    *,
    cache: Path,
    progress: TargetProgressFn,
    recipes: Path | None = None,
    sdist: Path | None = None,
) -> Rebuilt:
    """Rebuild `wheel` from its manifest in a fresh temporary folder. On a failure the folder
    is kept for its logs; on success `cleanup` removes it once the caller is done."""
    manifest = load_manifest(wheel, NEEDED_TO_REBUILD, "a rebuild", REBUILD_OTHERWISE)
    try:
        lock = pypi.Lock.from_json(json.dumps({"lock_format": 1, "entries": manifest.lock}))
    except ConfigError as exc:
        raise ManifestError(f"{manifest_path(wheel)}: {exc.message}", fix=exc.fix) from exc
    pinned = pypi.Lock(tuple(e for e in lock.entries if e.kind in ("sdist", "build")))
    target = _build_target(manifest)
    folder = Path(tempfile.mkdtemp(prefix="cbuild-verify-"))
    ok = False
    t0 = time.monotonic()
    try:
        recipe, recipes_dir, notes = recipe_from_manifest(manifest, folder, recipes)
        notes += _placed_notes(wheel, manifest)
        spec = target_spec(recipe, target)
        _, inotes = image_for_target(engine, spec, lambda m: progress(target.id, m), manifest)
        notes += inotes
        _seed(cache, folder / "cache", list(lock.entries))
        # The rebuilt wheel's test takes its dependencies where the placed one's did.
        root = wheelhouse_root(wheel, manifest.built_target())
        links = tuple(root / f for f in search_folders(target)) if root else ()
        req = WheelRequest(
            manifest.package,
            manifest.version,
            (target,),
            folder / "wheelhouse",
            folder / "cache",
            recipes_dir,
            sdist=sdist,
            rebuild=True,
            pinned=pinned,
            find_links=links,
        )
        report = Pipeline(engine, progress).run(req)
        r = report.results[0]
        if r.wheel is None:
            raise BuildError(
                f"the rebuild of {wheel.name} failed: {r.status}: {r.reason}\n{r.test_detail}",
                fix=f"its logs are kept in {folder}",
            )
        if not report.ok:
            notes.append(f"the rebuilt wheel did not pass its test ({r.status}); compared anyway")
        notes += _provenance_notes(manifest, r.build_key, r.build_facts, spec.hash)
        ok = True
        return Rebuilt(
            wheel,
            r.wheel,
            r.sha256,
            manifest,
            report,
            folder,
            notes,
            time.monotonic() - t0,
        )
    finally:
        if not ok:
            progress("", f"rebuild folder kept for its logs: {folder}")


def cleanup(rebuilt: Rebuilt, keep: bool = False) -> None:
    if not keep:
        shutil.rmtree(rebuilt.folder, ignore_errors=True)


def _placed_notes(wheel: Path, manifest: Manifest) -> list[str]:
    """Changes to the wheel since it was built: a rebuild gives the wheel as built."""
    notes = []
    if edits := manifest.edits:
        flat = "; ".join(str(c) for change in edits for c in (change or ["?"]))
        notes.append(
            f"the wheel was edited after it was built ({flat}): a rebuild gives the wheel "
            "before those edits"
        )
    if pypi.sha256_of(wheel) != manifest.sha256:
        notes.append(
            f"the wheel is not the one its manifest records (sha256 {manifest.sha256[:16]}): "
            "it was changed after it was placed"
        )
    return notes


def _provenance_notes(
    manifest: Manifest, key: str, facts: dict[str, Any], spec_hash: str
) -> list[str]:
    """Where the rebuild's inputs differ from the recorded ones: the likely causes first."""
    build = manifest.build or {}
    notes = []
    if not build:
        notes.append("the manifest does not record the build (older cbuild): no key to compare")
    elif build.get("key") and build["key"] != key:
        notes.append(
            f"the build key differs from the recorded one ({build['key'][:16]} -> {key[:16]}): "
            "the recipe, the image definition, the pinned inputs or cbuild's build steps "
            f"changed since (steps version {build.get('steps_version')} recorded)"
        )
    if manifest.image_spec_hash and manifest.image_spec_hash != spec_hash:
        notes.append(
            f"the image definition differs: recorded {manifest.image_spec_hash}, now {spec_hash}"
        )
    for k in ("gcc", "gxx", "gfortran", "ld", "python", "glibc"):
        if k in build and k in facts and build[k] != facts[k]:
            notes.append(f"{k} differs: recorded {build[k]!r}, the rebuild used {facts[k]!r}")
    return notes + package_drift(manifest.image_packages, facts.get("image_packages"))


_PACKAGE_KINDS = {"deb": "Debian package", "python": "Python package of the image"}


def package_drift(
    recorded: dict[str, list[str]] | None, now: dict[str, list[str]] | None
) -> list[str]:
    """The image's installed packages that changed since the build, one line each: a version
    that differs, one added, one gone. A manifest without the field says "not recorded"."""
    if not recorded:
        return ["the image's installed packages: not recorded (an older cbuild's manifest)"]
    if not now:
        return ["the image's installed packages: the rebuild could not list them"]
    notes = []
    for kind, what in _PACKAGE_KINDS.items():
        if recorded.get(kind) is None or now.get(kind) is None:
            continue
        was = dict(p.partition("=")[::2] for p in recorded[kind])
        has = dict(p.partition("=")[::2] for p in now[kind])
        for name in sorted(was.keys() | has.keys()):
            if name not in has:
                notes.append(f"{what} {name} {was[name]}: gone from the image")
            elif name not in was:
                notes.append(f"{what} {name} {has[name]}: new in the image")
            elif was[name] != has[name]:
                notes.append(
                    f"{what} {name}: recorded {was[name]}, the rebuild's image has {has[name]}"
                )
    return notes


# ---------------------------------------------------------------------------- finding wheels


def find_placed(wheelhouse: Path, package: str, version: str, target_id: str) -> Path:
    """The wheel of PACKAGE VERSION that `cbuild wheel` placed for TARGET (by its manifest)."""
    target = resolve_targets([target_id])[0]
    name = canonicalize_name(package)
    try:
        want = Version(version)
    except InvalidVersion as exc:
        raise ConfigError(f"{version!r} is not a version: {exc}") from exc
    others = []
    # pip's folders first, then the stack's other folders (a wheel placed for the target
    # lies in one of them).
    for folder in dict.fromkeys([*search_folders(target), *stack_folders(target.stack)]):
        for whl in sorted(wheelhouse / folder / n for n in wheel_names(wheelhouse / folder)):
            try:
                wname, wver, _, _ = parse_wheel_filename(whl.name)
            except (ValueError, InvalidVersion):
                continue
            if wname != name or Version(wver.public) != want:
                continue
            try:
                tid = Manifest.load(manifest_path(whl)).target_id
            except ManifestError:
                tid = None
            if tid == target_id:
                return whl
            others.append(f"{folder}/{whl.name} ({'target ' + tid if tid else 'no manifest'})")
    there = "; there: " + ", ".join(others) if others else ""
    raise ConfigError(
        f"no wheel of {package} {version} built for {target_id} in {wheelhouse}{there}",
        fix=f"build it with `cbuild wheel {package} {version} --target {target_id} "
        f"--wheelhouse {wheelhouse}`, or pass the wheel file: `cbuild verify WHEEL`",
    )


__all__ = [
    "Rebuilt",
    "cleanup",
    "find_placed",
    "package_drift",
    "rebuild",
]
