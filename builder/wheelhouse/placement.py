"""Wheelhouse placement: a pure planner that explains every decision, and an atomic copy step.

pip on a node reads `<stack>/<level>`, then `<stack>/generic`, then `generic` (`layout`); the
rules below (DESIGN.md, site rules) keep the wheel it finds unambiguous:
- pure wheels go to the pure folder, once;
- a level build is level-specific only on evidence (`level_specific`): the recipe says so
  (`[wheel] per_level`), or the ISA scan finds more instructions above the baseline level than
  in the baseline build, or it links a level folder's library of the stack. Without any, the
  baseline (`generic` target) build goes to the stack's generic folder, once, and the level
  builds are "same code as the baseline", not placed;
- with one, every level build goes to its level folder and no generic copy is made (pip on a
  node reads its level folder and generic both: one file name in two would be ambiguous);
- a generic copy is refused while level-specific wheels of the package exist;
- an existing wheel is replaced only with `force`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from packaging.utils import canonicalize_name

from builder.errors import PlacementError
from builder.files import temp_beside
from builder.targets.model import Stack
from builder.wheelhouse import layout
from builder.wheelhouse.layout import GENERIC, check_writable, level_folders
from builder.wheelhouse.lock import wheelhouse_lock


class IsaFigures(Protocol):
    """What placement reads of a wheel's ISA scan (`wheels.isascan.WheelIsa` has it)."""

    @property
    def highest_level(self) -> str | None: ...
    @property
    def instructions(self) -> int: ...
    @property
    def above(self) -> Mapping[str, int]: ...  # level -> instructions above it
    @property
    def library_paths(self) -> tuple[str, ...]: ...  # RPATH/RUNPATH entries


@dataclass(frozen=True)
class Candidate:
    target_id: str
    level_name: str  # "generic" or a CPU level name such as "x86-64-v4"
    wheel: Path
    content_digest: str
    is_pure: bool
    isa: IsaFigures | None = field(default=None, compare=False)  # None: not scanned
    per_level: bool | None = None  # the recipe's [wheel] per_level; None: by evidence
    accelerator: str = "cpu"  # a CUDA variant is placed apart from the CPU builds


@dataclass(frozen=True)
class Decision:
    target_id: str
    wheel_name: str
    folder: str | None  # relative to the wheelhouse root; None: not placed
    reason: str
    error: str | None = None  # a refusal: nothing at all is placed while any decision has one
    replace: bool = False  # the destination holds a wheel of this name and force was given
    facts: dict[str, Any] = field(default_factory=dict, compare=False)  # figures behind it


def _package(wheel_name: str) -> str:
    # The name part alone, so that a stray badly named file in the wheelhouse does not crash
    # the planner; canonical so that `ruamel.yaml.clib` and `ruamel_yaml_clib` are one package.
    return canonicalize_name(wheel_name.split("-", 1)[0])


def plan(
    candidates: Sequence[Candidate],
    stack: Stack,
    wheelhouse_index: dict[str, set[str]],
    *,
    force: bool = False,
) -> list[Decision]:
    """One decision per candidate, in the candidates' order. Pure: reads only its arguments."""
    first: dict[int, Decision] = {}
    by_package: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        if c.level_name != GENERIC and c.level_name not in stack.levels:
            first[i] = _refuse(
                c,
                f"level {c.level_name!r} is not one of {stack.name}'s levels "
                f"({', '.join(stack.levels)})",
            )
        elif c.is_pure:
            first[i] = _to(
                c, stack.pure_folder, "pure-Python wheel: every stack and CPU reads the pure folder"
            )
        else:
            # CPU and CUDA variants are different builds: never each other's baseline
            by_package.setdefault(f"{_package(c.wheel.name)} {c.accelerator}", []).append(i)

    for idxs in by_package.values():
        first.update(_plan_compiled([(i, candidates[i]) for i in idxs], stack))

    decisions = _dedupe_destinations([first[i] for i in range(len(candidates))], candidates)
    return [_check_wheelhouse(d, stack, wheelhouse_index, force) for d in decisions]


def _to(c: Candidate, folder: str, reason: str, facts: dict[str, Any] | None = None) -> Decision:
    return Decision(c.target_id, c.wheel.name, folder, reason, facts=facts or {})


def _skip(c: Candidate, reason: str, facts: dict[str, Any] | None = None) -> Decision:
    return Decision(c.target_id, c.wheel.name, None, reason, facts=facts or {})


def _refuse(c: Candidate, error: str) -> Decision:
    return Decision(c.target_id, c.wheel.name, None, "refused", error)


def _plan_compiled(group: list[tuple[int, Candidate]], stack: Stack) -> dict[int, Decision]:
    """The decisions for the compiled builds of one package in this run."""
    generic_dir = stack.generic_folder
    baselines = {c.wheel.name: c for _, c in group if c.level_name == GENERIC}
    levels = [(i, c) for i, c in group if c.level_name != GENERIC]
    out: dict[int, Decision] = {}

    if not levels:
        for i, c in group:
            out[i] = _to(
                c,
                generic_dir,
                f"baseline build (compiled for {stack.baseline_level}, "
                "the level every node has); no level builds in this run",
            )
        return out
    if not baselines:
        for i, c in levels:
            out[i] = _to(
                c,
                stack.folder_for_level(c.level_name),
                "level build, and no baseline build in this run to stand in for it",
            )
        return out

    verdicts = {i: level_specific(c, baselines.get(c.wheel.name), stack) for i, c in levels}
    specific = [c for i, c in levels if verdicts[i].specific]
    if not specific:
        for i, c in group:
            if c.level_name == GENERIC:
                out[i] = _to(
                    c,
                    generic_dir,
                    "no level build is level-specific, so the package is not level-dependent: "
                    "this baseline build serves every level",
                    facts=_facts(c, stack),
                )
            else:
                base = baselines[c.wheel.name]
                v = verdicts[i]
                out[i] = _skip(
                    c,
                    f"same code as the baseline: {v.why}; the baseline build from "
                    f"{base.target_id} goes to {generic_dir}/",
                    facts=v.facts,
                )
        return out

    which = ", ".join(sorted(c.target_id for c in specific))
    for i, c in group:
        if c.level_name == GENERIC:
            out[i] = _skip(
                c,
                f"level-dependent ({which} level-specific): the level folders get every "
                "level build, and a generic copy of the same file name would be ambiguous "
                "for pip",
                facts=_facts(c, stack),
            )
        else:
            v = verdicts[i]
            out[i] = _to(
                c,
                stack.folder_for_level(c.level_name),
                f"level-dependent package ({which} level-specific): every level gets its own "
                f"build" + (f": {v.why}" if v.specific else f", this one too although {v.why}"),
                facts=v.facts,
            )
    return out


@dataclass(frozen=True)
class Verdict:
    specific: bool
    why: str
    facts: dict[str, Any]


def level_specific(c: Candidate, base: Candidate | None, stack: Stack) -> Verdict:
    """Whether level build `c` must be kept for its level, judged against the baseline build
    of the same file name: the recipe's word first, then the evidence of the ISA scan (code
    above the baseline level beyond what the baseline build holds, for runtime dispatch) and
    of the libraries it links. Without a scan, bytes that differ count as level-specific."""
    facts = _facts(c, stack, base)
    if c.per_level is not None:
        return Verdict(
            c.per_level,
            f"the recipe says [wheel] per_level = {str(c.per_level).lower()}",
            facts,
        )
    if base is None:
        return Verdict(True, "no baseline build of the same file name stands in for it", facts)
    if base.content_digest == c.content_digest:
        return Verdict(False, f"identical to the baseline build from {base.target_id}", facts)
    if c.isa is None or base.isa is None:
        return Verdict(True, "differs from the baseline build, and no ISA scan says how", facts)
    if libs := _level_libraries(c.isa, stack):
        return Verdict(True, f"links level-specific libraries of the stack ({libs[0]})", facts)
    lv, n, nb = stack.baseline_level, facts["above_baseline"], facts["baseline_above_baseline"]
    top = c.isa.highest_level or "no x86 code"
    if n > nb:
        return Verdict(
            True,
            f"{n:,} instructions above {lv} (highest: {top}), the baseline build {nb:,}",
            facts,
        )
    return Verdict(
        False,
        f"{n:,} instructions above {lv} (highest: {top}), no more than the baseline build's {nb:,}",
        facts,
    )


def _facts(c: Candidate, stack: Stack, base: Candidate | None = None) -> dict[str, Any]:
    """The figures behind a verdict, for --explain and --json."""
    lv = stack.baseline_level
    out: dict[str, Any] = {"content_digest": c.content_digest[:16]}
    if c.isa is not None:
        out |= {
            "highest_level": c.isa.highest_level,
            "instructions": c.isa.instructions,
            "above_baseline": c.isa.above.get(lv, 0),
            "level_libraries": list(_level_libraries(c.isa, stack)),
        }
    if base is not None and base.isa is not None:
        out["baseline_above_baseline"] = base.isa.above.get(lv, 0)
        out["baseline_highest_level"] = base.isa.highest_level
    return out


def _level_libraries(isa: IsaFigures, stack: Stack) -> tuple[str, ...]:
    """RPATH/RUNPATH entries in a folder named for a level above the stack's baseline (its
    name, or the provider's name for it: `x86-64-v4`, `avx512`)."""
    names = set(layout.levels_above_baseline(stack))
    names |= {alias for lv in list(names) for alias in layout.level_aliases(stack, lv)}
    return tuple(p for p in isa.library_paths if names & set(PurePosixPath(p).parts))


def _dedupe_destinations(
    decisions: list[Decision], candidates: Sequence[Candidate]
) -> list[Decision]:
    """Two targets may produce the same file for the same folder: place identical ones once,
    refuse different ones (only one file of that name can exist there)."""
    owner: dict[tuple[str, str], int] = {}
    out = list(decisions)
    for i, d in enumerate(decisions):
        if d.folder is None:
            continue
        key = (d.folder, d.wheel_name)
        if key not in owner:
            owner[key] = i
            continue
        j = owner[key]
        a, b = candidates[j], candidates[i]
        if a.content_digest == b.content_digest:
            out[i] = _skip(
                b, f"identical to the build from {a.target_id}, placed once in {d.folder}/"
            )
        elif a.accelerator != b.accelerator:
            msg = (
                f"{a.target_id} ({a.accelerator}) and {b.target_id} ({b.accelerator}) both "
                f"produce {d.folder}/{d.wheel_name}: variants must differ in file name; the "
                'recipe tells them apart ([accelerators."cuda12".wheel] local_tags = ["cuda12"] '
                "gives +cuda12.<label>, or a [wheel] suffix)"
            )
            out[j] = _refuse(a, msg)
            out[i] = _refuse(b, msg)
        else:
            msg = (
                f"{a.target_id} and {b.target_id} both produce {d.folder}/{d.wheel_name} "
                f"with different contents ({a.content_digest[:12]} vs "
                f"{b.content_digest[:12]}); the build is not reproducible across targets"
            )
            out[j] = _refuse(a, msg)
            out[i] = _refuse(b, msg)
    return out


def _check_wheelhouse(
    d: Decision, stack: Stack, index: dict[str, set[str]], force: bool
) -> Decision:
    if d.folder is None or d.error:
        return d
    existing_here = d.wheel_name in index.get(d.folder, set())
    levels = level_folders(stack)

    if d.folder == stack.generic_folder:
        package = _package(d.wheel_name)
        found = sorted(
            f"{folder}/{name}"
            for folder in levels
            for name in index.get(folder, set())
            if _package(name) == package
        )
        if found:
            return _refuse_d(
                d,
                f"refusing a generic copy of {d.wheel_name}: level-specific "
                f"wheels of {package} already exist ({', '.join(found)}); "
                "remove them, or build all targets so the wheel goes to the "
                "level folders",
            )
    elif d.folder in levels and d.wheel_name in index.get(stack.generic_folder, set()):
        return _refuse_d(
            d,
            f"{stack.generic_folder}/{d.wheel_name} exists and pip on a node "
            f"reads it together with {d.folder}/, so the same file name there "
            f"would be ambiguous; remove {stack.generic_folder}/{d.wheel_name} "
            "(this run shows the package is level-dependent)",
        )

    if existing_here:
        path = f"{d.folder}/{d.wheel_name}"
        if not force:
            return _refuse_d(d, f"exists: {path}; pass --force to replace it")
        return Decision(
            d.target_id,
            d.wheel_name,
            d.folder,
            f"{d.reason}; replaces the existing {path} (--force)",
            replace=True,
            facts=d.facts,
        )
    return d


def _refuse_d(d: Decision, error: str) -> Decision:
    return Decision(d.target_id, d.wheel_name, None, "refused", error, facts=d.facts)


def explain(decisions: Iterable[Decision], figures: bool = False) -> list[str]:
    """One line per decision; `figures`: and the scan's figures behind it, indented."""
    lines = []
    for d in decisions:
        if d.error:
            lines.append(f"{d.target_id}: {d.wheel_name}: REFUSED: {d.error}")
        elif d.folder is None:
            lines.append(f"{d.target_id}: {d.wheel_name}: not placed: {d.reason}")
        else:
            lines.append(f"{d.target_id}: {d.wheel_name} -> {d.folder}/: {d.reason}")
        if figures and d.facts:
            lines.append("    " + ", ".join(f"{k}: {v}" for k, v in d.facts.items()))
    return lines


# ---------------------------------------------------------------------------- side effects


def place(
    decisions: Sequence[Decision], wheelhouse: Path, candidates: Sequence[Candidate]
) -> list[Path]:
    """Copy the planned wheels in: all temporaries first, then all renames, so that a failure
    while copying leaves the wheelhouse as it was. Nothing is written if any decision is a
    refusal."""
    errors = [d for d in decisions if d.error]
    if errors:
        lines = "\n".join(f"  - {d.target_id}: {d.error}" for d in errors)
        raise PlacementError(
            f"{len(errors)} wheel(s) refused, nothing placed:\n{lines}",
            fix="see each refusal above",
        )
    wheelhouse = Path(wheelhouse)
    check_writable(wheelhouse, {d.folder for d in decisions if d.folder is not None})
    by_key = {(c.target_id, c.wheel.name): c for c in candidates}
    moves = [
        (by_key[(d.target_id, d.wheel_name)].wheel, wheelhouse / d.folder / d.wheel_name, d)
        for d in decisions
        if d.folder is not None
    ]

    made_dirs: list[Path] = []
    temps: list[tuple[Path, Path]] = []
    try:
        for src, dest, d in moves:
            for parent in reversed([dest.parent, *dest.parent.parents]):
                if not parent.exists():
                    parent.mkdir()
                    made_dirs.append(parent)
            if dest.exists() and not d.replace:
                raise PlacementError(
                    f"exists: {dest} (it appeared after the plan was made)",
                    fix="plan again; pass --force to replace it",
                )
            tmp = temp_beside(dest)
            # open() rather than mkstemp: the wheel gets the umask's mode, not a private 0600.
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                temps.append((tmp, dest))
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
        placed = []
        for tmp, dest in temps:
            os.replace(tmp, dest)
            placed.append(dest)
        return placed
    except BaseException as exc:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        for folder in reversed(made_dirs):
            with contextlib.suppress(OSError):  # not empty: a rename already put a wheel there
                folder.rmdir()
        if isinstance(exc, OSError):
            raise PlacementError(
                f"could not place wheels in {wheelhouse}: {exc}",
                fix="check the wheelhouse's permissions and free space",
            ) from exc
        raise


def commit(
    candidates: Sequence[Candidate],
    stack: Stack,
    wheelhouse: Path,
    *,
    force: bool = False,
    beside: Callable[[Decision, Path], None] | None = None,
    what: str = "cbuild place",
    on_plan: Callable[[list[Decision]], None] | None = None,
) -> tuple[list[Decision], list[Path]]:
    """Scan, plan and place under the wheelhouse lock, so that two placements into one
    wheelhouse never decide from the same scan. `on_plan` sees the decisions before anything
    is written (a refusal raises after it); `beside(decision, placed_wheel)` writes what goes
    next to each placed wheel (its manifest) while the lock is still held."""
    wheelhouse = Path(wheelhouse)
    check_writable(wheelhouse)
    with wheelhouse_lock(wheelhouse, what):
        decisions = plan(candidates, stack, layout.scan(wheelhouse, stack), force=force)
        if on_plan is not None:
            on_plan(decisions)
        placed = place(decisions, wheelhouse, candidates)
        if beside is not None:
            for d in decisions:
                if d.folder is not None:
                    beside(d, wheelhouse / d.folder / d.wheel_name)
    return decisions, placed


__all__ = [
    "Candidate",
    "Decision",
    "IsaFigures",
    "Verdict",
    "commit",
    "explain",
    "level_specific",
    "place",
    "plan",
]
