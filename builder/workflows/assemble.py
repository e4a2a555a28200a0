"""Place split jobs' exports (`cbuild place DIR... --wheelhouse W`): each package version's
wheels from all the folders, grouped, decided by the same planner and the same evidence as
one `cbuild wheel --all-targets` run, and placed under the wheelhouse lock with their manifests.

Refused before anything of a package is placed: a target missing (a failed job, a folder not
passed), two different wheels for one target, a wheel whose test failed or (with `strict`)
that was not tested, an export changed after it was written (`wheelhouse.unplaced`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import parse_wheel_filename

from builder.errors import CbuildError, PlacementError
from builder.files import write_atomic
from builder.manifest import manifest_path
from builder.pipeline.model import Status
from builder.pipeline.place import with_evidence
from builder.targets.model import load_stack
from builder.wheelhouse import placement, unplaced
from builder.wheels.repair import wheel_content_digest


@dataclass
class Assembled:
    """One package version's outcome."""

    package: str
    version: str
    decisions: list[placement.Decision] = field(default_factory=list)
    placed: list[Path] = field(default_factory=list)
    error: str | None = None
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "placed": [str(p) for p in self.placed],
            "decisions": [
                {
                    "target": d.target_id,
                    "wheel": d.wheel_name,
                    "folder": d.folder,
                    "reason": d.reason,
                    "error": d.error,
                    "facts": d.facts,
                }
                for d in self.decisions
            ],
            "error": self.error,
            "fix": self.fix,
        }


def assemble(
    folders: Sequence[Path],
    wheelhouse: Path,
    *,
    force: bool = False,
    strict: bool = False,
    expected: Sequence[str] = (),
) -> list[Assembled]:
    """Place every package version found in `folders`; a refusal of one package leaves the
    others placed. Reading errors (an incomplete or changed export) raise before any placing."""
    groups = unplaced.group(unplaced.read(folders), expected)
    out = []
    for (package, version, stack_name), items in sorted(groups.items()):
        result = Assembled(package, version)
        try:
            _place_one(result, items, stack_name, wheelhouse, force, strict)
        except CbuildError as exc:
            result.error, result.fix = exc.message, exc.fix
        out.append(result)
    return out


def _place_one(
    result: Assembled,
    items: list[unplaced.Item],
    stack_name: str,
    wheelhouse: Path,
    force: bool,
    strict: bool,
) -> None:
    cands = with_evidence([_candidate(it, strict) for it in items])
    by_target = {it.target_id: it for it in items}

    def copy_manifest(d: placement.Decision, wheel: Path) -> None:
        src = manifest_path(by_target[d.target_id].wheel)
        write_atomic(manifest_path(wheel), src.read_bytes())

    def record(decisions: list[placement.Decision]) -> None:
        result.decisions = decisions

    _, result.placed = placement.commit(
        cands,
        load_stack(stack_name),
        wheelhouse,
        force=force,
        beside=copy_manifest,
        on_plan=record,
        what=f"cbuild place {result.package} {result.version}",
    )


def _candidate(it: unplaced.Item, strict: bool) -> placement.Candidate:
    m = it.manifest
    status = Status(m.test.status) if m.test else Status.NOT_TESTED
    if status.failed:
        raise PlacementError(
            f"{it.target_id}: {it.wheel.name} {status} its test; it is never placed",
            fix="fix the build and run that target's job again",
        )
    if strict and status is not Status.TESTED:
        raise PlacementError(
            f"--strict: {it.target_id} was not tested ({m.test.how if m.test else 'no record'})",
            fix="run that job where its CPU level can be tested, or leave out --strict",
        )
    _, _, _, tags = parse_wheel_filename(it.wheel.name)
    resolved = ((m.recipe or {}).get("resolved") or {}).get("wheel") or {}
    return placement.Candidate(
        it.target_id,
        it.level_name,
        it.wheel,
        wheel_content_digest(it.wheel),
        all(t.platform == "any" for t in tags),
        per_level=resolved.get("per_level"),
        accelerator=str((m.target or {}).get("accelerator", "cpu")),
    )


__all__ = ["Assembled", "assemble"]
