"""Running a recursive build: the missing dependencies first, in the plan's order, through the
same pipeline, then the package; requirements unknown before a build are checked after it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.cache import Cache
from builder.errors import BuildError, CbuildError, ConfigError, FetchError
from builder.pipeline.job import Pipeline
from builder.pipeline.model import RunReport, WheelRequest
from builder.sources import pypi
from builder.wheelhouse.layout import find_links
from builder.workflows.recursive.index import Index, PyPIIndex
from builder.workflows.recursive.plan import (
    DependencyError,
    Missing,
    Plan,
    Step,
    Wheelhouse,
    _Node,
    plan,
)
from builder.workflows.recursive.requires import (
    Edits,
    Requires,
    recipe_edits,
    sdist_requires,
    wheel_requires,
)


@dataclass
class Outcome:
    report: RunReport  # the package asked for
    dependencies: list[RunReport]  # built first, in the order built
    requires: Requires  # the package's requirements as known before its build
    missing: list[Missing]  # what the wheelhouse lacks (without --recursive: listed, not built)
    plan: list[Step]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.report.as_dict(),
            "requirements_known_before_build": self.requires.known,
            "requirements_from": self.requires.source,
            "missing_dependencies": [m.as_dict() for m in self.missing],
            "plan": [s.as_dict() for s in self.plan],
            "dependencies": [r.as_dict() for r in self.dependencies],
        }


Warn = Callable[[str], None]


def build(
    pipeline: Pipeline,
    req: WheelRequest,
    *,
    recursive: bool = False,
    warn: Warn | None = None,
    index: Index | None = None,
) -> Outcome:
    """`cbuild wheel`: build `req`; with `recursive`, first build what it needs that the
    wheelhouse lacks for its targets. Without, list those (before the build when the sdist says
    what it requires, from the built wheel after it otherwise); no container is added for it.

    A dependency that fails or a cycle raises DependencyError with the chain; nothing of the
    dependent is built then (dependencies placed before the failure stay: they are complete)."""
    warn = warn or (lambda line: None)
    req = replace(req, find_links=find_links(req.wheelhouse, req.targets))
    requires = _root_requires(req)
    edits = recipe_edits(req.recipes_dir)
    wh = Wheelhouse.scan(req.wheelhouse, req.targets)
    if not recursive:
        return _listing(pipeline, req, requires, wh, edits, warn)
    run = _Recursive(pipeline, req, edits, index or PyPIIndex(req.cache))
    return run.go(requires, wh)


def _root_requires(req: WheelRequest) -> Requires:
    """The package's requirements from its sdist: the cached one pinned by the last run's lock
    when there is one (an up-to-date rerun stays offline), else the index's. An sdist that
    cannot be had is the pipeline's to report."""
    try:
        return sdist_requires(_root_sdist(req))
    except (FetchError, BuildError, OSError) as exc:
        why = exc.message if isinstance(exc, CbuildError) else str(exc)
        return Requires((), False, f"unknown before the build (sdist not read: {why})")


def _root_sdist(req: WheelRequest) -> Path:
    if req.sdist is not None:
        return req.sdist
    cache = Cache(req.cache)
    lock = cache.lock_file(req.package, req.version)
    with contextlib.suppress(OSError, ConfigError):
        for e in pypi.Lock.from_json(lock.read_text()).of_kind("sdist"):
            path = cache.sdists / e.filename
            if path.is_file() and pypi.sha256_of(path) == e.sha256:
                return path
    release = pypi.release_info(req.package, req.version)
    return pypi.download(release.sdist_url, release.sdist_sha256, cache.sdists)


def _listing(
    pipeline: Pipeline,
    req: WheelRequest,
    requires: Requires,
    wh: Wheelhouse,
    edits: Edits,
    warn: Warn,
) -> Outcome:
    root = plan(req.package, req.version, requires, req.targets, wh, None, edits)
    if requires.known:
        for m in root.missing:
            warn(m.line())
    else:
        pipeline.progress("", f"requirements of {req.package}: {requires.source}")
    t0 = time.time()
    try:
        report = pipeline.run(req)
    except CbuildError:
        if not requires.known:  # say what was missing before the error says what failed
            for m in _after(req, _work_wheels(req, t0), edits).missing:
                warn(m.line())
        raise
    missing = root.missing
    if not requires.known and (wheels := _report_wheels(report)):
        missing = _after(req, wheels, edits).missing
        for m in missing:
            warn(m.line())
    return Outcome(report, [], requires, missing, [])


def _after(req: WheelRequest, wheels: list[Path], edits: Edits) -> Plan:
    if not wheels:
        return Plan([], [], [])
    wh = Wheelhouse.scan(req.wheelhouse, req.targets)
    return plan(req.package, req.version, wheel_requires(wheels), req.targets, wh, None, edits)


def _report_wheels(report: RunReport) -> list[Path]:
    built = [r.wheel for r in report.results if r.wheel and r.wheel.is_file()]
    return built or [p for p in report.placed if p.suffix == ".whl" and p.is_file()]


def _work_wheels(req: WheelRequest, since: float) -> list[Path]:
    """The wheels a run that raised built: Pipeline.run raises instead of reporting when the
    runtime fetch fails (a dependency no index has), and its wheels are then only in its work
    folder, <cache>/work/<name>-<version>/<run>/wheels/<target>/."""
    want = canonicalize_name(req.package)
    runs = []
    for d in Cache(req.cache).work.glob("*"):
        name, _, version = d.name.rpartition("-")
        with contextlib.suppress(InvalidVersion):
            if canonicalize_name(name) != want or Version(version) != Version(req.version):
                continue
            runs += [r for r in d.iterdir() if r.is_dir() and r.stat().st_mtime >= since - 1]
    if not runs:
        return []
    newest = max(runs, key=lambda r: r.stat().st_mtime)
    return sorted(newest.glob("wheels/*/*.whl"))


class _Recursive:
    def __init__(self, pipeline: Pipeline, req: WheelRequest, edits: Edits, index: Index) -> None:
        self.pipeline = pipeline
        self.req = req
        self.edits = edits
        self.index = index
        self.built: list[RunReport] = []
        self.done: set[str] = set()
        self.nodes: dict[str, _Node] = {}

    def say(self, msg: str) -> None:
        self.pipeline.progress("", msg)

    def go(self, requires: Requires, wh: Wheelhouse) -> Outcome:
        req = self.req
        first = plan(req.package, req.version, requires, req.targets, wh, self.index, self.edits)
        self.nodes = first._nodes
        deps = first.dependencies
        if not requires.known:
            self.say(f"requirements of {req.package}: {requires.source}; checked after its build")
        if deps:
            self.say(
                "missing from the wheelhouse, built first: "
                + ", ".join(f"{s.name} {s.version}" for s in deps)
            )
        for step in deps:
            if canonicalize_name(step.name) not in self.done:
                self.step(step)
        report = self.step(first.steps[-1], root=True)
        assert report is not None
        return Outcome(report, self.built, requires, first.missing, first.steps)

    def step(self, step: Step, root: bool = False) -> RunReport | None:
        key = canonicalize_name(step.name)
        targets = tuple(t for t in self.req.targets if t.id in step.targets)
        sub = replace(
            self.req,
            package=step.name,
            version=step.version,
            targets=targets,
            sdist=self.req.sdist if root else None,
            pinned=self.req.pinned if root else None,
        )
        if not root:
            self.say(f"{' -> '.join(step.chain)}: {step.name} {step.version}")
        t0 = time.time()
        report, exc = self._run(sub)
        ok = report is not None and report.ok
        if not step.requires.known:
            wheels = _report_wheels(report) if report else _work_wheels(sub, t0)
            if wheels:
                more = self._check_after(step, wheels)
                for s in more:
                    if canonicalize_name(s.name) not in self.done:
                        self.step(s)
                if more and not ok:
                    self.say(f"{step.name} {step.version} again, with what it needs")
                    report, exc = self._run(sub)
                    ok = report is not None and report.ok
        self.done.add(key)
        if ok or (root and report is not None):
            if not root:
                self.built.append(report)
            return report
        if root:
            assert exc is not None
            raise exc
        raise self._failed(step, report, exc)

    def _run(self, sub: WheelRequest) -> tuple[RunReport | None, CbuildError | None]:
        try:
            return self.pipeline.run(sub), None
        except CbuildError as exc:
            return None, exc

    def _check_after(self, step: Step, wheels: list[Path]) -> list[Step]:
        """The builds the built wheel's METADATA calls for that the plan did not have."""
        wh = Wheelhouse.scan(self.req.wheelhouse, self.req.targets)
        targets = [t for t in self.req.targets if t.id in step.targets]
        prior = {k: n for k, n in self.nodes.items() if k != canonicalize_name(step.name)}
        after = plan(
            step.name,
            step.version,
            wheel_requires(wheels),
            targets,
            wh,
            self.index,
            self.edits,
            chain=step.chain,
            prior=prior,
        )
        self.nodes.update({k: n for k, n in after._nodes.items() if not n.frozen})
        return [s for s in after.dependencies if canonicalize_name(s.name) not in self.done]

    def _failed(
        self, step: Step, report: RunReport | None, exc: CbuildError | None
    ) -> DependencyError:
        if report is not None:
            why, code = report.error or "failed", report.exit_code
            logs = [
                str(r.test_log if r.status.test_failed else r.build_log)
                for r in report.results
                if r.status.failed
            ]
        else:
            assert exc is not None
            why, code, logs = exc.message, exc.exit_code, []
        placed = ", ".join(f"{r.package} {r.version}" for r in self.built) or "none"
        dependent = step.chain[0]
        return DependencyError(
            step.chain,
            f"build failed: {why}\n  nothing of {dependent} was built; dependencies placed "
            f"before the failure: {placed}",
            fix=(exc.fix if exc is not None and exc.fix else None)
            or f"fix {step.name}'s build (log: {', '.join(logs) or 'above'}) or add a wheel "
            f"of it to the wheelhouse, then run again",
            exit_code=code,
        )
