"""What a job is asked (`WheelRequest`), what its steps share (`RunContext`), what happens to
each target (`TargetResult`, its `Status`) and what the job reports (`RunReport`): plain data,
no side effects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from builder.cache import Cache
from builder.engines.base import Engine
from builder.errors import BuildError, TestFailure
from builder.progress import TargetProgressFn
from builder.recipes import Recipe
from builder.sources import pypi
from builder.targets.model import Target


class Status(StrEnum):
    """A target's state in a job. The values are what reports, records and manifests say."""

    PENDING = "pending"
    BUILT = "built"
    TESTED = "tested"
    NOT_TESTED = "not-tested"  # built, but no way to run the test on this host
    BUILD_FAILED = "build-failed"
    FAILED = "failed"  # the test failed
    ISA_LEAK = "isa-leak"  # the test died of an instruction above the target's level
    UP_TO_DATE = "up to date"  # a recorded run with the same build keys: nothing done

    @property
    def test_failed(self) -> bool:
        """The wheel was built and failed its test."""
        return self in (Status.FAILED, Status.ISA_LEAK)

    @property
    def failed(self) -> bool:
        """Nothing of the job may be exported."""
        return self is Status.BUILD_FAILED or self.test_failed


@dataclass(frozen=True)
class WheelRequest:
    package: str
    version: str
    targets: tuple[Target, ...]
    wheelhouse: Path
    cache: Path
    recipes_dir: Path | tuple[Path, ...]  # several: searched in order (builder.recipes)
    force: bool = False
    strict: bool = False
    sdist: Path | None = None  # a local source instead of PyPI's
    jobs: int = 1  # targets built and tested at once
    ccache: bool = False  # a compiler cache per target, kept in the cache folder
    rebuild: bool = False  # ignore a recorded run with the same build keys
    # A rebuild (cbuild rebuild/verify): exactly these sdist and build inputs, each checked
    # against its sha256, instead of resolving them again.
    pinned: pypi.Lock | None = None
    # Wheel folders the runtime fetch reads before the index, in this order: the wheelhouse
    # folders a node's pip reads, so that a dependency held (or just built) there is the one
    # the test installs, including one that no index has.
    find_links: tuple[Path, ...] = ()
    # A split job: the tested wheels and manifests go to this folder, unplaced
    # (`wheelhouse.unplaced`), and `cbuild place` places them with the other targets' exports.
    unplaced: Path | None = None


@dataclass(frozen=True)
class RunContext:
    """What the build and test steps of one job share: set once the sdist and the build
    inputs are there, never changed."""

    engine: Engine
    request: WheelRequest
    recipe: Recipe  # as loaded; each step resolves it for its target
    progress: TargetProgressFn
    work: Path  # this run's work folder: logs/, out/, wheels/, deps-*/
    sdist: Path
    facts: pypi.SdistFacts
    build_requires: tuple[str, ...]  # the sdist's and the recipe's
    build_deps: Path  # the locked build requirements, as wheels

    @property
    def cache(self) -> Cache:
        return Cache(self.request.cache)


@dataclass
class TargetResult:
    target: Target
    status: Status = Status.PENDING
    wheel: Path | None = None
    sha256: str = ""
    content_digest: str = ""
    is_pure: bool = False
    test_how: str = ""
    test_detail: str = ""
    build_log: Path | None = None
    test_log: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    placed: str | None = None
    reason: str = ""
    source_date_epoch: int = 0
    # Provenance for the manifest: the build's environment as given, facts probed in the
    # image (compiler, Python), the build key, and the target the wheel was really built on.
    build_env: dict[str, str] = field(default_factory=dict)
    build_facts: dict[str, Any] = field(default_factory=dict)
    build_key: str = ""
    built_on: str = ""

    def __post_init__(self) -> None:
        self.status = Status(self.status)  # given as its string too

    def adopt(self, built: TargetResult, kind: str = "pure") -> None:
        """Take another target's wheel that serves this one too (`kind`: "pure", or "abi3"
        from an older Python): built once, tested on every target."""
        self.wheel, self.sha256, self.is_pure = built.wheel, built.sha256, built.is_pure
        self.content_digest, self.build_log = built.content_digest, built.build_log
        self.source_date_epoch, self.status = built.source_date_epoch, Status.BUILT
        self.build_env, self.build_facts = built.build_env, built.build_facts
        self.build_key, self.built_on = built.build_key, built.built_on
        self.reason = f"{kind} wheel: built once on {built.target.id}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.id,
            "status": self.status,
            "wheel": self.wheel.name if self.wheel else None,
            "sha256": self.sha256,
            "tested": self.test_how,
            "test_detail": self.test_detail,
            "placed": self.placed,
            "reason": self.reason,
            "build_log": str(self.build_log) if self.build_log else None,
            "test_log": str(self.test_log) if self.test_log else None,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
        }


@dataclass
class RunReport:
    package: str
    version: str
    results: list[TargetResult]
    lock: list[dict[str, Any]]
    placed: list[Path]
    workdir: Path
    ok: bool
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """0, or why nothing was exported: a failed test or ISA leak, else a failed build."""
        if self.ok:
            return 0
        if any(r.status.test_failed for r in self.results):
            return TestFailure.exit_code
        return BuildError.exit_code

    def as_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "ok": self.ok,
            "error": self.error,
            "workdir": str(self.workdir),
            "targets": [r.as_dict() for r in self.results],
            "placed": [str(p) for p in self.placed],
            "lock": self.lock,
        }


def grouped(
    results: list[TargetResult], text: Callable[[TargetResult], str]
) -> list[tuple[str, list[str]]]:
    """(text, target ids) with each text once: results whose texts differ only in their own
    target id (a log named after it) share one line, the id shown as <target>."""
    groups: dict[str, list[TargetResult]] = {}
    for r in results:
        groups.setdefault(text(r).replace(r.target.id, "<target>"), []).append(r)
    return [
        (key if len(rs) > 1 else text(rs[0]), [r.target.id for r in rs])
        for key, rs in groups.items()
    ]
