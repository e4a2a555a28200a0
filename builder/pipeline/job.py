"""The job: fetch -> build (offline) -> repair -> test (offline, on the promised CPU level)
-> place -> manifest, for one package version and a set of targets.

This module orders the steps (`fetch`, `build`, `test`, `place`) and runs them `jobs` at a
time; the decisions (scripts, CPU-test plan, placement) are pure functions elsewhere.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from packaging.utils import canonicalize_name

from builder.cache import Cache
from builder.engines.base import Engine
from builder.errors import ConfigError
from builder.images.paths import IN_DIR
from builder.pipeline import cuda, fetch, repackage, share
from builder.pipeline.backend import backend_requires
from builder.pipeline.build import build
from builder.pipeline.keys import record_run, target_keys, target_spec, up_to_date
from builder.pipeline.model import (
    RunContext,
    RunReport,
    Status,
    TargetResult,
    WheelRequest,
    grouped,
)
from builder.pipeline.place import export, place
from builder.pipeline.test import test
from builder.progress import TargetProgressFn
from builder.providers import PROVIDERS, get_provider
from builder.recipes import Recipe, load_recipe
from builder.sources import pypi
from builder.targets.model import Target
from builder.wheelhouse.layout import check_writable


def new_workdir(folder: Path, keep: int = 3) -> Path:
    """A fresh work folder for this run (runs of the same package never share one), beside
    the last `keep` runs' folders, whose logs the messages of those runs point at."""
    folder.mkdir(parents=True, exist_ok=True)
    old = sorted(p for p in folder.iterdir() if p.is_dir() and p.name[:1].isdigit())
    for p in old[: max(0, len(old) - keep + 1)]:
        shutil.rmtree(p, ignore_errors=True)
    work = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    (work / "logs").mkdir(parents=True)
    return work


def _check_recipe(req: WheelRequest, recipe: Recipe) -> None:
    """Refuse, before any work, targets the recipe does not build for or cannot build yet."""
    if other := [t.id for t in req.targets if not recipe.builds_for_accelerator(t.accelerator)]:
        raise ConfigError(
            f"{req.package}'s recipe builds for {', '.join(recipe.accelerators)}, not for the "
            f"accelerator of {', '.join(other)}",
            fix="add it to the recipe's [package] accelerators, or pick other targets",
        )
    if excluded := [t.id for t in req.targets if not recipe.builds_for_python(t.python)]:
        raise ConfigError(
            f"{req.package}'s recipe builds for Python {recipe.pythons}, not for the Python "
            f"of {', '.join(excluded)}",
            fix="pick targets with a Python the recipe allows, or widen [package] pythons",
        )
    # A pinned rebuild's source is the locked file, wherever the recipe says it came from.
    local = req.sdist is not None or req.pinned is not None
    if gaps := sorted({g for t in req.targets for g in recipe.for_target(t).not_built_yet(local)}):
        raise ConfigError(
            f"{req.package}'s recipe needs what cbuild does not do yet: {'; '.join(gaps)}",
            fix="build from a local source with --sdist, or drop the field from the recipe",
        )
    for t in req.targets:  # keys only some providers act on: refused, never silently dropped
        provider = get_provider(t.provider)
        who = f"the {provider.name} provider"
        if gaps := recipe.for_target(t).not_honoured(who, provider.honours):
            others = [n for n, make in PROVIDERS.items() if make().honours - provider.honours]
            raise ConfigError(
                f"{req.package}'s recipe sets what the {provider.name} provider of {t.id} "
                f"cannot honour: {'; '.join(gaps)}",
                fix="give the image Debian packages for it ([system] apt)"
                + (f", build with --provider {'|'.join(others)}" if others else "")
                + ', or move the key under a [targets."..."] table of the targets that load it',
            )


class Pipeline:
    def __init__(self, engine: Engine, progress: TargetProgressFn) -> None:
        self.engine = engine
        self.progress = progress

    def run(self, req: WheelRequest) -> RunReport:
        check_writable(req.wheelhouse)
        recipe = load_recipe(req.package, req.version, req.recipes_dir)
        _check_recipe(req, recipe)
        # An unplaced export has no wheelhouse of its own to be up to date in: it builds.
        if not req.rebuild and req.unplaced is None and (done := up_to_date(req, recipe)):
            return done
        if recipe.source.kind == "wheel" and req.sdist is None:  # PyPI's binary wheel, no build
            work = new_workdir(Cache(req.cache).work / f"{req.package}-{req.version}")
            return repackage.run(self, req, recipe, work)
        release, sdist = fetch.source(req, self.progress, recipe)
        # Cached by an older cbuild as 0600: an engine whose container user is not ours
        # (Apptainer's) must read it like any input.
        sdist.chmod(sdist.stat().st_mode | 0o444)
        facts = pypi.sdist_facts(sdist)
        cache = Cache(req.cache)
        work = new_workdir(cache.work / f"{release.name}-{release.version}")
        results = [TargetResult(t) for t in req.targets]
        lock = [
            pypi.LockEntry(
                canonicalize_name(release.name),
                release.version,
                sdist.name,
                release.sdist_sha256,
                "sdist",
                release.sdist_url,
            )
        ]

        images = {}
        for t in req.targets:
            self.progress(t.id, "image")
            images[t.id] = self.engine.build_image(
                target_spec(recipe, t, req.ccache), lambda m, i=t.id: self.progress(i, m)
            )
        # A GPU architecture the toolkit does not know is refused before any build.
        cuda.check_archs(self.engine, self.progress, req.targets, images, recipe, work / "logs")

        # One image per Python fetches for its interpreter (wheels tagged cp313 and so on);
        # the build requirements of every Python share one folder, pip picks its own.
        first, first_python = images[req.targets[0].id], req.targets[0].python
        others: dict[str, Target] = {}
        for t in req.targets:
            if t.python != first_python:
                others.setdefault(t.python, t)
        build_requires = (*facts.build_requires, *recipe.build_requires)
        deps = work / "deps-build"
        for t in others.values() if req.pinned is None else ():
            fetch.fetch_wheels(
                self.engine,
                self.progress,
                images[t.id],
                list(build_requires),
                deps,
                req.cache,
                work / "logs" / f"fetch-{t.python}.log",
                target=t,
            )
        if req.pinned is not None:
            fetch.fetch_pinned(
                self.engine,
                self.progress,
                first,
                req.pinned.of_kind("build"),
                deps,
                req.cache,
                work / "logs",
                target=req.targets[0],
            )
        else:
            fetch.fetch_wheels(
                self.engine,
                self.progress,
                first,
                list(build_requires),
                deps,
                req.cache,
                work / "logs" / "fetch.log",
                target=req.targets[0],
            )
        # What the backend asks for besides (PEP 517), fetched and locked like the rest.
        asked = (self.engine, self.progress, images, req, recipe, sdist, facts)
        build_requires += backend_requires(*asked, build_requires, deps, work)
        lock += pypi.lock_entries_from_dir(deps, "build")
        keys = target_keys(req, recipe, lock)
        ctx = RunContext(
            self.engine, req, recipe, self.progress, work, sdist, facts, build_requires, deps
        )

        def build_one(r: TargetResult) -> None:
            r.build_key = keys[r.target.id]
            build(ctx, r, images[r.target.id])

        runtime_deps = self._runtime_deps(ctx, images, lock, first_python)

        def test_one(r: TargetResult) -> None:
            test(ctx, r, images[r.target.id], runtime_deps(r))

        # Built once where one wheel serves several targets (pure: all; abi3: a level's
        # Pythons), each target testing it on its own Python and level (builder.pipeline.share).
        plan = share.groups(results, native=fetch.has_native_sources(sdist))
        self._build_and_test(build_one, test_one, plan, req.jobs)
        return self._finish(ctx, results, release, lock, images, keys)

    def _runtime_deps(
        self,
        ctx: RunContext,
        images: dict[str, str],
        lock: list[pypi.LockEntry],
        first_python: str,
    ) -> Callable[[TargetResult], Path]:
        """The test's runtime dependencies of a target, fetched once per Python (added to
        `lock`), for its first wheel whose test comes up, in that target's image (its
        interpreter's wheels)."""
        req, recipe, work = ctx.request, ctx.recipe, ctx.work
        rt_guard, rt_fetched = threading.Lock(), set()

        def runtime_deps(r: TargetResult) -> Path:
            py = r.target.python
            rt_deps = work / ("deps-runtime" if py == first_python else f"deps-runtime-{py}")
            with rt_guard:  # a failed fetch raises here for every test that needs it
                if py not in rt_fetched:
                    fetch.fetch_wheels(
                        self.engine,
                        self.progress,
                        images[r.target.id],
                        [f"{IN_DIR}/{r.wheel.name}", *recipe.test_requires],
                        rt_deps,
                        req.cache,
                        work / "logs" / "fetch.log",
                        mounts=[r.wheel.parent],
                        links=req.find_links,
                        target=r.target,
                    )
                    dist = r.wheel.name.split("-")[0]
                    for p in rt_deps.iterdir():  # the wheel under test came along: not a dep
                        if p.name.split("-")[0] == dist:
                            p.unlink()
                    known = {(e.kind, e.filename) for e in lock}
                    lock.extend(
                        e
                        for e in pypi.lock_entries_from_dir(rt_deps, "runtime")
                        if (e.kind, e.filename) not in known
                    )
                    rt_fetched.add(py)
            return rt_deps

        return runtime_deps

    def _finish(
        self,
        ctx: RunContext,
        results: list[TargetResult],
        release: pypi.Release,
        lock: list[pypi.LockEntry],
        images: dict[str, str],
        keys: dict[str, str],
    ) -> RunReport:
        """The report of tested results: nothing exported after a failure (or an untested
        target under --strict), else exported (a split job) or placed, and the run recorded."""
        req, work = ctx.request, ctx.work
        (work / "lock.json").write_text(pypi.Lock(tuple(lock)).to_json())

        report = RunReport(
            release.name, release.version, results, [asdict(e) for e in lock], [], work, ok=False
        )
        failed = [r for r in results if r.status.failed]
        untested = [r for r in results if r.status is Status.NOT_TESTED]
        if failed:
            report.error = (
                # identical failures of several targets once, with their targets
                "; ".join(
                    f"{', '.join(ids)}: {text}"
                    for text, ids in grouped(
                        failed, lambda r: f"{r.status}: {r.test_detail or r.reason}"
                    )
                )
                + " -- nothing was exported"
            )
            return report
        if req.strict and untested:
            report.error = (
                "--strict: not tested on "
                + ", ".join(r.target.id for r in untested)
                + " -- nothing was exported"
            )
            return report
        if req.unplaced is not None:  # a split job: `cbuild place` decides with the others
            report.placed = export(ctx, results, release, lock, images, req.unplaced)
            report.ok = True
            return report
        report.placed = place(ctx, results, release, lock, images)
        report.ok = True
        record_run(req, keys, lock, report)
        return report

    def _build_and_test(
        self,
        build: Callable[[TargetResult], None],
        test: Callable[[TargetResult], None],
        plan: list[tuple[TargetResult, list[TargetResult]]],
        jobs: int,
    ) -> None:
        """Build, then test, `jobs` at a time across levels and Pythons: each group's leader
        first, then its followers take its wheel (share.shared_kind) or build their own; each
        target's test is queued as soon as its wheel is there (so a test overlaps the next
        build). Ctrl-C or an error stops the rest, and the engine removes this run's
        containers at once."""

        def follow(leader: TargetResult, r: TargetResult) -> bool:
            """Take the leader's wheel if it serves `r`; False: `r` builds its own."""
            kind = share.shared_kind(leader)
            if kind:
                r.adopt(leader, kind)
            return kind is not None

        if jobs <= 1:
            for leader, followers in plan:
                build(leader)
                for r in followers:
                    if not follow(leader, r):
                        build(r)
            for r in [r for leader, fs in plan for r in (leader, *fs)]:
                if r.wheel:
                    test(r)
            return
        guard = threading.Lock()
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="cbuild") as pool:
            tests: list = []
            builds: list = []

            def build_then_test(r: TargetResult) -> None:
                build(r)
                if r.wheel:
                    with guard:
                        tests.append(pool.submit(test, r))

            def lead(leader: TargetResult, followers: list[TargetResult]) -> None:
                build_then_test(leader)
                for r in followers:
                    with guard:
                        if follow(leader, r):
                            tests.append(pool.submit(test, r))
                        else:
                            builds.append(pool.submit(build_then_test, r))

            builds += [pool.submit(lead, leader, fs) for leader, fs in plan]
            try:
                i = 0
                while i < len(builds):  # leaders append their followers' builds
                    builds[i].result()
                    i += 1
                for f in list(tests):  # complete: every build has queued its test
                    f.result()
            except BaseException:
                for f in [*builds, *tests]:
                    f.cancel()
                # The other workers are blocked on their containers: removing the
                # containers ends them now instead of when their builds finish.
                self.engine.stop_all()
                raise


__all__ = ["Pipeline", "new_workdir"]
