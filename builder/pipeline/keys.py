"""Build keys and recorded runs: a build key hashes everything that decides a build's bits;
a run recorded under its targets' keys lets the next run say "up to date" without a container
or the network.

Every input a person can change enters the key from its bytes: the sdist (a local `--sdist` is
hashed again on every run, never taken from the last run's lock), the recipe file's text and
the recipe as resolved, the patch files, the image definition (its spec hash) and the locked
build dependencies (their sha256), and the provider's stack (cvmfs: its revision and modules).
The step scripts enter through STEPS_VERSION; how wheels were tested enters the run key."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from builder.cache import Cache
from builder.files import write_atomic
from builder.images import scripts as steps
from builder.images.spec import ImageSpec
from builder.pipeline.model import RunReport, Status, TargetResult, WheelRequest
from builder.providers import get_provider, spec_for
from builder.recipes import Recipe
from builder.sources import pypi
from builder.targets.cputest import TEST_METHOD_VERSION
from builder.targets.model import Target


def target_spec(recipe: Recipe, target: Target, ccache: bool = False) -> ImageSpec:
    """The image a recipe builds a target in: the target's, plus the recipe's apt packages
    (and ccache when asked for: its own image, so the default images stay as they are)."""
    return spec_for(target, (*recipe.for_target(target).apt, *(("ccache",) if ccache else ())))


def build_key(
    recipe: Recipe, lock: list[pypi.LockEntry], target: Target, ccache: bool = False
) -> str:
    """The hash of everything that decides a build's bits: the recipe as resolved, the pinned
    inputs, the image definition, the target and its flags, and the step scripts' version."""
    payload = {
        # Where the recipe and its patches lie does not change the bits; what they say does.
        "recipe_file": _sha256_or_none(recipe.path),
        "recipe": _plain(
            {
                k: v
                for k, v in asdict(recipe).items()
                if k not in ("path", "patches_dir") and not k.startswith("_")
            }
        ),
        "patches": [(p.name, _sha256_or_none(p)) for p in recipe.patch_files],
        "inputs": sorted(
            (e.kind, e.filename, e.sha256) for e in lock if e.kind in ("sdist", "build")
        ),
        "image": target_spec(recipe, target, ccache).hash,
        "target": target.as_dict(),
        # The stack the provider builds on (cvmfs: the repository's revision, the modules).
        "provider": get_provider(target.provider).provenance(
            target, (*recipe.modules, *recipe.runtime_modules)
        ),
        "steps": steps.STEPS_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _sha256_or_none(path: Path | None) -> str | None:
    return pypi.sha256_of(path) if path is not None and path.is_file() else None


def _plain(value: Any) -> Any:
    """JSON-ready, keys as strings, order fixed: a stable hash input from any dataclass tree."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_plain(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def run_key(keys: dict[str, str], wheelhouse: Path) -> str:
    """A recorded run: its build keys, its wheelhouse, and how its wheels were tested."""
    text = json.dumps([sorted(keys.items()), str(wheelhouse), TEST_METHOD_VERSION])
    return hashlib.sha256(text.encode()).hexdigest()


def target_keys(req: WheelRequest, recipe: Recipe, lock: list[pypi.LockEntry]) -> dict[str, str]:
    """Each requested target's build key, by target id."""
    return {t.id: build_key(recipe.for_target(t), lock, t, req.ccache) for t in req.targets}


def record_run(
    req: WheelRequest, keys: dict[str, str], lock: list[pypi.LockEntry], report: RunReport
) -> None:
    """What the next run needs to say "up to date" without a container or the network."""
    cache = Cache(req.cache)
    pinned = pypi.Lock(tuple(e for e in lock if e.kind in ("sdist", "build")))
    write_atomic(cache.lock_file(req.package, req.version), pinned.to_json())
    record = {
        "package": report.package,
        "version": report.version,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "lock": report.lock,
        "placed": {str(p.relative_to(req.wheelhouse)): pypi.sha256_of(p) for p in report.placed},
        "targets": {
            r.target.id: {
                "sha256": r.sha256,
                "placed": r.placed,
                "tested": r.test_how,
                "status": r.status,
            }
            for r in report.results
        },
    }
    write_atomic(
        cache.runs / f"{run_key(keys, req.wheelhouse)}.json", json.dumps(record, indent=2) + "\n"
    )


def up_to_date(req: WheelRequest, recipe: Recipe) -> RunReport | None:
    """No container, no network: the lock of the last run pins the inputs (a local sdist is
    hashed from its bytes now, a rebuild's pinned lock replaces the last run's); when every
    target's build key has a recorded run whose placed wheels are all still in the
    wheelhouse, bit for bit, there is nothing to do."""
    cache = Cache(req.cache)
    lock_file = cache.lock_file(req.package, req.version)
    if req.pinned is not None:
        entries = req.pinned.entries
    elif lock_file.is_file():
        entries = pypi.Lock.from_json(lock_file.read_text()).entries
    else:
        return None
    lock = [e for e in entries if e.kind in ("sdist", "build")]
    if req.sdist is not None and req.pinned is None:
        if not req.sdist.is_file():
            return None  # the run says why
        sdist = [e for e in lock if e.kind == "sdist"]
        if len(sdist) != 1:
            return None
        # The file as it is now, not as the last run locked it: same name, other bytes differ.
        now = replace(sdist[0], filename=req.sdist.name, sha256=pypi.sha256_of(req.sdist))
        lock = [now if e is sdist[0] else e for e in lock]
    keys = target_keys(req, recipe, lock)
    record = cache.runs / f"{run_key(keys, req.wheelhouse)}.json"
    if not record.is_file():
        return None
    data = json.loads(record.read_text())
    for rel, sha in data["placed"].items():
        path = req.wheelhouse / rel
        if not path.is_file() or pypi.sha256_of(path) != sha:
            return None
    results = []
    for t in req.targets:
        row = data["targets"][t.id]
        r = TargetResult(
            t,
            status=Status.UP_TO_DATE,
            sha256=row["sha256"],
            placed=row["placed"],
            test_how=row["tested"],
            reason=f"build key {keys[t.id][:16]} "
            f"unchanged since {data['when']}; --rebuild forces a build",
        )
        results.append(r)
    return RunReport(
        data["package"],
        data["version"],
        results,
        data["lock"],
        [req.wheelhouse / p for p in data["placed"]],
        req.cache,
        ok=True,
    )
