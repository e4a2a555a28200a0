"""The repackaging job ([source] binary_wheel): for each target, PyPI's binary wheel that pip
would install on its Python and its stack's glibc (builder.sources.binary), downloaded by
sha256 and made a site wheel by repair (linux_* tags in the name and WHEEL, the site label,
nvidia-* requirements removed, the recipe's RPATH, vendored-library and requirement edits),
then tested on its promised level and placed like a built wheel. Nothing is compiled: the ISA
scan says what level the wheel's code holds, and the test on the level says what it needs."""

from __future__ import annotations

import calendar
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from packaging.utils import canonicalize_name

from builder.cache import Cache
from builder.engines.base import Engine
from builder.pipeline.build import site_wheel
from builder.pipeline.keys import target_keys, target_spec
from builder.pipeline.model import RunContext, RunReport, Status, TargetResult, WheelRequest
from builder.pipeline.test import test
from builder.progress import TargetProgressFn
from builder.providers import get_provider
from builder.recipes import Recipe
from builder.sources import binary, pypi
from builder.wheels import repair
from builder.wheels.isascan import scan_wheel


class JobSteps(Protocol):
    """What this job takes of builder.pipeline.job.Pipeline: its engine and progress, the
    runtime-dependency fetch, the build-and-test scheduler and the report (export or place)."""

    engine: Engine
    progress: TargetProgressFn

    def _runtime_deps(
        self, ctx: RunContext, images: dict[str, str], lock: list, first_python: str
    ) -> Callable[[TargetResult], Path]: ...

    def _build_and_test(
        self,
        build: Callable[[TargetResult], None],
        test: Callable[[TargetResult], None],
        plan: list[tuple[TargetResult, list[TargetResult]]],
        jobs: int,
    ) -> None: ...

    def _finish(
        self,
        ctx: RunContext,
        results: list[TargetResult],
        release: pypi.Release,
        lock: list,
        images: dict[str, str],
        keys: dict[str, str],
    ) -> RunReport: ...


# A stack whose data names no glibc: manylinux2014's, which every supported stack has.
DEFAULT_GLIBC = "2.17"


def wheel_epoch(path: Path) -> int:
    """The newest member time of a wheel: its repackaged copy's zip times (from its bytes, so
    the same download gives the same site wheel)."""
    with zipfile.ZipFile(path) as zf:
        return max(calendar.timegm((*i.date_time, 0, 0, 0)) for i in zf.infolist())


def run(pipeline: JobSteps, req: WheelRequest, recipe: Recipe, work: Path) -> RunReport:
    """Repackage, test and place (or export) `req`'s targets in `work`; locked by the sha256 of
    each PyPI wheel taken (kind "sdist": the job's source), rebuilt from those."""
    engine, progress = pipeline.engine, pipeline.progress
    cache = Cache(req.cache)
    lookup = recipe.source.pypi_name or req.package
    if req.pinned is not None:  # a rebuild: the locked wheels, by sha256
        name = req.package
        epoch = datetime.fromtimestamp(0, UTC)
        wheels = [
            binary.BinaryWheel(e.filename, e.url, e.sha256, epoch)
            for e in req.pinned.of_kind("sdist")
        ]
    else:
        progress("", f"PyPI: {lookup} {req.version} (binary wheels)")
        name, wheels = binary.release_wheels(lookup, req.version)
    chosen = {}
    for t in req.targets:
        glibc = get_provider(t.provider).glibc_floor(t.stack) or DEFAULT_GLIBC
        chosen[t.id] = binary.pick(wheels, t.python, glibc, f"{name} {req.version}")
    files: dict[str, Path] = {}
    lock = []
    for w in {c.filename: c for c in chosen.values()}.values():
        progress("", f"fetch {w.filename}")
        files[w.filename] = pypi.download(w.url, w.sha256, cache.sdists)
        lock.append(
            pypi.LockEntry(
                canonicalize_name(name), req.version, w.filename, w.sha256, "sdist", w.url
            )
        )
    images = {}
    for t in req.targets:
        progress(t.id, "image")
        images[t.id] = engine.build_image(target_spec(recipe, t), lambda m, i=t.id: progress(i, m))
    keys = target_keys(req, recipe, lock)
    first = files[chosen[req.targets[0].id].filename]
    facts = pypi.SdistFacts("", (), "", False, wheel_epoch(first))
    ctx = RunContext(engine, req, recipe, progress, work, first, facts, (), work / "deps-build")
    results = [TargetResult(t) for t in req.targets]

    def build_one(r: TargetResult) -> None:
        r.build_key = keys[r.target.id]
        repackage(ctx, r, files[chosen[r.target.id].filename])

    runtime_deps = pipeline._runtime_deps(ctx, images, lock, req.targets[0].python)

    def test_one(r: TargetResult) -> None:
        test(ctx, r, images[r.target.id], runtime_deps(r))

    pipeline._build_and_test(build_one, test_one, [(r, []) for r in results], req.jobs)
    release = pypi.Release(
        name,
        req.version,
        chosen[results[0].target.id].url,
        first.name,
        lock[0].sha256,
        None,
        datetime.fromtimestamp(facts.source_date_epoch, UTC),
    )
    return pipeline._finish(ctx, results, release, lock, images, keys)


def repackage(ctx: RunContext, r: TargetResult, wheel: Path) -> None:
    """`wheel` made a site wheel for `r`'s target; `r` records it, and the level its code
    holds (the ISA scan), as its reason."""
    t = r.target
    recipe = ctx.recipe.for_target(t)
    ctx.progress(t.id, f"repackage {wheel.name}")
    epoch = wheel_epoch(wheel)
    try:
        fixed = site_wheel(wheel, ctx.work / "wheels" / t.id, recipe, t, epoch)
    except repair.RepairError as exc:
        r.status, r.reason = Status.BUILD_FAILED, f"repackaging {wheel.name}: {exc.message}"
        return
    r.wheel, r.is_pure = fixed.path, fixed.is_pure
    r.sha256 = repair.wheel_sha256(fixed.path)
    r.content_digest = repair.wheel_content_digest(fixed.path)
    r.status, r.source_date_epoch, r.built_on = Status.BUILT, epoch, t.id
    isa = scan_wheel(fixed.path)
    holds = isa.highest_level or "no level-specific code"
    r.reason = f"repackaged {wheel.name} from PyPI; its code holds up to {holds} (ISA scan)"
    ctx.progress(t.id, r.reason)
    r.build_facts = {
        "repackaged": {
            "from": wheel.name,
            "changes": fixed.changes,
            "isa_highest_level": isa.highest_level,
        }
    }
