"""Batch files: many package versions, each with its targets, built by `cbuild batch`.

The format, one package version a line:

    # comments and blank lines are ignored
    biopython==1.85 gentoo2023-x86-64-v3 gentoo2023-x86-64-v4
    six==1.16.0                 # no targets: every target

Parsing and planning are pure; `run_local` drives one build function over the list.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.errors import CbuildError, ConfigError
from builder.pipeline.model import Status
from builder.providers import unbuildable
from builder.targets.model import Target, all_targets, resolve

EXAMPLE = "biopython==1.85 gentoo2023-x86-64-v3"
_PINNED = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^=<>!~;,\[\]@]+)")


@dataclass(frozen=True)
class BatchEntry:
    package: str  # as written in the file
    version: str
    targets: tuple[Target, ...]
    line: int

    @property
    def target_ids(self) -> tuple[str, ...]:
        return tuple(t.id for t in self.targets)

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"


class BatchFileError(ConfigError):
    """Every mistake in one batch file, each with its file:line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        if len(errors) == 1:
            super().__init__(errors[0].message, errors[0].fix)
        else:
            super().__init__("\n".join(str(e) for e in errors))


def read_batch(path: Path, provider: str = "standalone") -> list[BatchEntry]:
    if not path.is_file():
        raise ConfigError(
            f"batch file {path}: no such file",
            fix=f"write one package==version a line, e.g. `{EXAMPLE}`",
        )
    return parse_batch(path.read_text(), str(path), provider)


def parse_batch(
    text: str, where: str = "<batch>", provider: str = "standalone"
) -> list[BatchEntry]:
    """The entries of a batch file, or a BatchFileError naming every bad line."""
    entries: list[BatchEntry] = []
    errors: list[ConfigError] = []
    first_line: dict[tuple[str, Version], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        try:
            package, version = _requirement(words, where, number)
            targets = _targets(words[1:], where, number, provider)
        except ConfigError as exc:
            errors.append(exc)
            continue
        key = (canonicalize_name(package), Version(version))  # 1.16 and 1.16.0 are one
        if key in first_line:
            # Two lines would be two builds of one version racing for the same wheel names.
            errors.append(
                ConfigError(
                    f"{where}:{number}: {package}=={version} is listed on line "
                    f"{first_line[key]} already",
                    fix="list a package version once, with all its targets on that line",
                )
            )
            continue
        first_line[key] = number
        entries.append(BatchEntry(package, version, targets, number))
    if errors:
        raise BatchFileError(errors)
    if not entries:
        raise ConfigError(
            f"{where}: no packages listed",
            fix=f"write one package==version a line, e.g. `{EXAMPLE}`",
        )
    return entries


def _requirement(words: list[str], where: str, number: int) -> tuple[str, str]:
    text = words[0]
    fix = f"write the package and one exact version, e.g. `{EXAMPLE}`"
    if len(words) > 1 and words[1].startswith(("=", "<", ">", "!", "~")):
        raise ConfigError(
            f"{where}:{number}: {' '.join(words[:3])!r}: spaces inside the requirement",
            fix=f"write it without spaces: {''.join(words[:3])}",
        )
    if m := _PINNED.fullmatch(text):
        try:
            Version(m["version"])
        except InvalidVersion:
            raise ConfigError(
                f"{where}:{number}: {m['version']!r} is not a valid version", fix
            ) from None
        return m["name"], m["version"]
    # Not name==version: let packaging say what it is, to say what is wrong with it.
    try:
        req = Requirement(text)
    except InvalidRequirement:
        raise ConfigError(f"{where}:{number}: {text!r} is not a requirement", fix) from None
    if req.url or req.marker or req.extras:
        raise ConfigError(
            f"{where}:{number}: {text!r}: extras, markers and URLs have no meaning here", fix
        )
    raise ConfigError(
        f"{where}:{number}: {text!r} does not pin one version (a batch builds exact versions)",
        f"write {req.name}==VERSION",
    )


def _targets(ids: list[str], where: str, number: int, provider: str) -> tuple[Target, ...]:
    """The line's target ids (each carries its Python: `-py313`); none: every target the
    provider can build here (as `--all-targets`: a Python whose source no mirror serves is
    left out, `cbuild targets` says why)."""
    if not ids:
        every = all_targets(provider)
        skipped = unbuildable(every)
        return tuple(t for t in every if t not in skipped)
    try:
        return tuple(resolve(ids, provider))
    except ConfigError as exc:
        raise ConfigError(f"{where}:{number}: {exc.message}", exc.fix) from None


def github_matrix(entries: list[BatchEntry]) -> dict[str, Any]:
    """What `strategy.matrix: ${{ fromJSON(...) }}` takes: one job per package x target. Each
    job exports with `cbuild wheel --unplaced DIR`; one job after all of them places every
    folder with `cbuild place DIR... --wheelhouse W` (the decision one local run makes)."""
    return {
        "include": [
            {"package": e.package, "version": e.version, "target": t}
            for e in entries
            for t in e.target_ids
        ]
    }


@dataclass(frozen=True)
class Task:
    """One Slurm array task: one package version with all of its targets.

    Not one task per target: placement decides over a package's targets together (a pure
    wheel is placed once; a compiled one goes to the generic folder only when no level build is
    level-specific), so a task that placed alone would decide from part of the evidence. A
    split by target (the `--matrix github` jobs) exports with `cbuild wheel --unplaced DIR` and
    places with one `cbuild place DIR...` after all (workflows.assemble), as the workflow does.
    A package's targets still run in parallel inside the task (--cpus-per-task)."""

    index: int
    package: str
    version: str
    targets: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "package": self.package,
            "version": self.version,
            "targets": list(self.targets),
        }


def plan_tasks(entries: list[BatchEntry]) -> list[Task]:
    return [Task(i, e.package, e.version, e.target_ids) for i, e in enumerate(entries)]


# --- local runs -------------------------------------------------------------------------------


@dataclass
class Outcome:
    entry: BatchEntry
    state: str  # ok | up to date | failed
    seconds: float
    report: Any = None  # the pipeline's RunReport, when it got that far
    error: str | None = None
    fix: str | None = None
    exit_code: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "package": self.entry.package,
            "version": self.entry.version,
            "targets": list(self.entry.target_ids),
            "line": self.entry.line,
            "state": self.state,
            "error": self.error,
            "fix": self.fix,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 1),
            "report": self.report.as_dict() if self.report is not None else None,
        }


def run_local(entries: list[BatchEntry], build: Callable[[BatchEntry], Any]) -> Iterator[Outcome]:
    """Build the entries one after another; a failure is recorded and the next one goes on.

    One at a time because each build already runs its targets `--jobs` at a time with the cores
    shared among them: packages at once would oversubscribe the cores and the engine."""
    for e in entries:
        t0 = time.monotonic()
        try:
            report = build(e)
        except CbuildError as exc:
            secs = time.monotonic() - t0
            yield Outcome(e, "failed", secs, None, exc.message, exc.fix, exc.exit_code)
            continue
        secs = time.monotonic() - t0
        if not report.ok:
            yield Outcome(e, "failed", secs, report, report.error, None, report.exit_code)
        elif all(r.status is Status.UP_TO_DATE for r in report.results):
            yield Outcome(e, "up to date", secs, report)
        else:
            yield Outcome(e, "ok", secs, report)
