"""The recursive planner, pure over an `Index` and a `Wheelhouse` view: which builds a package
needs that the wheelhouse lacks for its targets, in dependency order, and the chain to each."""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.errors import BuildError
from builder.targets.model import Target
from builder.wheelhouse import layout
from builder.wheels import repair
from builder.workflows.recursive.index import Candidate, Index
from builder.workflows.recursive.requires import Edits, Requires, marker_env, no_edits


@dataclass
class Wheelhouse:
    """The wheel file names in each folder; a held wheel's requirements are read on demand
    from `root`, or taken from `given` ("folder/file" -> requirements) for a listing."""

    files: dict[str, set[str]]
    root: Path | None = None
    given: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def scan(cls, root: Path, targets: Sequence[Target]) -> Wheelhouse:
        """The folders the targets' nodes read, as they are on disk now."""
        return cls(layout.scan_folders(root, layout.run_search_folders(targets)), root)

    def requires(self, folder: str, name: str) -> tuple[str, ...]:
        key = f"{folder}/{name}"
        if key in self.given or self.root is None:
            return self.given.get(key, ())
        try:
            return tuple(repair.requires_dist(self.root / folder / name))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return ()  # an unreadable wheel is `cbuild inspect`'s to report, not a dependency

    def held(self, req: Requirement, target: Target) -> tuple[str, str] | None:
        """(folder, file) of the newest wheel satisfying `req` for `target`, searched in the
        layout's order; None when the target's pip would find none."""
        want = canonicalize_name(req.name)
        tags = layout.accepted_tags(target)
        for folder in layout.search_folders(target):
            best: tuple[Version, str] | None = None
            for fname in self.files.get(folder, ()):
                try:
                    name, version, _, wtags = parse_wheel_filename(fname)
                except (InvalidWheelFilename, InvalidVersion):
                    continue  # not a wheel pip would take either
                if name != want or not (wtags & tags) or not req.specifier.contains(version):
                    continue
                if best is None or version > best[0]:
                    best = (version, fname)
            if best is not None:
                return folder, best[1]
        return None


class DependencyError(BuildError):
    """A dependency could not be planned or built; `chain` is how the package led to it."""

    def __init__(
        self, chain: Sequence[str], message: str, fix: str | None = None, exit_code: int = 5
    ) -> None:
        self.chain = tuple(chain)
        self.exit_code = exit_code
        super().__init__(f"{' -> '.join(self.chain)}: {message}", fix)


class DependencyCycle(DependencyError):
    def __init__(self, chain: Sequence[str]) -> None:
        super().__init__(
            chain,
            "dependency cycle: each needs the other installed for its test",
            fix="build the packages of the cycle by hand, or drop one requirement with the "
            "recipe's [wheel] remove_requires",
        )


@dataclass(frozen=True)
class Step:
    """One build of the plan."""

    name: str  # as the index spells it (the package asked for: as asked)
    version: str
    targets: tuple[str, ...]  # target ids it is built for: those whose folders lack it
    chain: tuple[str, ...]  # how the package asked for led to it, itself last
    requires: Requires
    requirement: str | None = None  # what asked for it; None for the package asked for

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "targets": list(self.targets),
            "chain": " -> ".join(self.chain),
            "requirement": self.requirement,
            "requirements_known": self.requires.known,
            "requirements_from": self.requires.source,
        }


@dataclass(frozen=True)
class Missing:
    requirement: str
    targets: tuple[str, ...]
    chain: tuple[str, ...]  # the packages leading to the one that needs it, that one last

    def line(self) -> str:
        return (
            f"{' -> '.join(self.chain)} needs {self.requirement}, which the wheelhouse does "
            f"not hold for {', '.join(self.targets)}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "requirement": self.requirement,
            "targets": list(self.targets),
            "needed_by": " -> ".join(self.chain),
        }


@dataclass(frozen=True)
class Held:
    requirement: str
    target: str
    wheel: str  # folder/file


@dataclass
class _Node:
    name: str
    version: str
    requires: Requires
    chain: tuple[str, ...]
    requirement: str | None = None
    targets: set[str] = field(default_factory=set)
    done: set[tuple[str, str]] = field(default_factory=set)  # (target id, extra) expanded
    # canonical name of a build it needs -> held wheels in between (shown in chains)
    edges: dict[str, tuple[str, ...]] = field(default_factory=dict)
    frozen: bool = False  # planned by an earlier plan: taken as it is


@dataclass
class Plan:
    steps: list[Step]  # dependency order: each after what it needs; the package asked for last
    missing: list[Missing]
    held: list[Held]
    _nodes: dict[str, _Node] = field(default_factory=dict, repr=False)

    @property
    def dependencies(self) -> list[Step]:
        return self.steps[:-1]


def plan(
    name: str,
    version: str,
    requires: Requires,
    targets: Sequence[Target],
    wheelhouse: Wheelhouse,
    index: Index | None = None,
    edits: Edits = no_edits,
    *,
    chain: tuple[str, ...] = (),
    prior: dict[str, _Node] | None = None,
) -> Plan:
    """The builds that `name` `version` needs for `targets`: what the wheelhouse lacks and, with
    an index, what to build for it, in dependency order. Without an index only the missing
    requirements are listed (held wheels are still followed: that reads local files only).

    `chain`: how an outer plan reached this package; `prior`: that plan's nodes, taken as they
    are (a check after a build plans on top of the plan that led to it)."""
    p = _Planner(targets, wheelhouse, index, edits)
    for key, node in (prior or {}).items():
        p.nodes[key] = replace(node, frozen=True)
    root = _Node(name, version, requires, chain or (name,), targets={t.id for t in targets})
    key = canonicalize_name(name)
    p.nodes[key] = root
    p.expand(root, [t.id for t in targets], set())
    order = p.order(key)
    steps = [
        Step(
            n.name,
            n.version,
            tuple(t.id for t in targets if t.id in n.targets),
            n.chain,
            n.requires,
            n.requirement,
        )
        for n in order
    ]
    return Plan(steps, p.missing, p.held, p.nodes)


class _Planner:
    def __init__(
        self,
        targets: Sequence[Target],
        wheelhouse: Wheelhouse,
        index: Index | None,
        edits: Edits,
    ) -> None:
        self.targets = {t.id: t for t in targets}
        self.wh = wheelhouse
        self.index = index
        self.edits = edits
        self.nodes: dict[str, _Node] = {}
        self.missing: list[Missing] = []
        self.held: list[Held] = []
        self.seen_held: set[tuple[str, str, frozenset[str]]] = set()

    # discovery: which builds exist and which needs which
    def expand(self, node: _Node, tids: Iterable[str], extras: set[str]) -> None:
        if node.frozen:
            return
        pairs = {(t, e) for t in tids for e in {"", *extras}} - node.done
        if not pairs:
            return
        node.done |= pairs
        active = self._active(node.name, node.version, node.requires, pairs, node.chain)
        self._resolve(node, active, (), node.chain)

    def _active(
        self,
        name: str,
        version: str,
        requires: Requires,
        pairs: set[tuple[str, str]],
        chain: tuple[str, ...],
    ) -> dict[str, tuple[Requirement, list[str]]]:
        """The requirements that apply, each with the targets it applies to. Extras count only
        when asked for (`pkg[extra]`); a target's markers are evaluated for its Python."""
        out: dict[str, tuple[Requirement, list[str]]] = {}
        for tid, extra in sorted(pairs):
            t = self.targets[tid]
            values = list(requires.requirements)
            if not requires.edited:
                values = self.edits(name, version, t, values)
            for text in values:
                try:
                    req = Requirement(text)
                except InvalidRequirement as exc:
                    raise DependencyError(
                        chain, f"invalid requirement {text!r} ({requires.source}): {exc}"
                    ) from None
                if not _applies(req, t.python, extra):
                    continue
                key = str(req)
                out.setdefault(key, (req, []))[1].append(tid)
        return {k: (r, list(dict.fromkeys(ts))) for k, (r, ts) in out.items()}

    def _resolve(
        self,
        owner: _Node,
        active: dict[str, tuple[Requirement, list[str]]],
        via: tuple[str, ...],
        chain: tuple[str, ...],
    ) -> None:
        for req, tids in active.values():
            if canonicalize_name(req.name) == canonicalize_name(owner.name):
                # Its own wheel is installed in its test: `pkg[all]` asking for `pkg[a]`, or
                # a held wheel needing the package back, only asks for its extras.
                self.expand(owner, tids, set(req.extras))
                continue
            lacking = []
            for tid in tids:
                hit = self.wh.held(req, self.targets[tid])
                if hit is None:
                    lacking.append(tid)
                    continue
                wheel = f"{hit[0]}/{hit[1]}"
                self.held.append(Held(str(req), tid, wheel))
                key = (wheel, tid, frozenset(req.extras))
                if key in self.seen_held:
                    continue
                self.seen_held.add(key)
                shown = hit[1].split("-", 2)[0]
                held_req = Requires(self.wh.requires(*hit), True, wheel, edited=True)
                pairs = {(tid, e) for e in {"", *req.extras}}
                sub = self._active(shown, "", held_req, pairs, (*chain, shown))
                self._resolve(owner, sub, (*via, shown), (*chain, shown))
            if lacking:
                self._missing(owner, req, lacking, via, chain)

    def _missing(
        self,
        owner: _Node,
        req: Requirement,
        lacking: list[str],
        via: tuple[str, ...],
        chain: tuple[str, ...],
    ) -> None:
        self.missing.append(Missing(str(req), tuple(lacking), chain))
        if self.index is None:
            return
        if req.url:
            raise DependencyError(
                (*chain, req.name),
                f"{req} is a direct URL requirement; cbuild builds from the index only",
                fix="add a wheel of it to the wheelhouse first",
            )
        key = canonicalize_name(req.name)
        node = self.nodes.get(key)
        if node is None:
            node = self._choose(req, lacking, chain)
            self.nodes[key] = node
        elif not req.specifier.contains(node.version, prereleases=True):
            raise DependencyError(
                (*chain, req.name),
                f"{req} does not accept {node.name} {node.version}, chosen for "
                f"{' -> '.join(node.chain)}",
                fix="build a version both accept first, by hand",
            )
        node.targets.update(lacking)
        owner.edges.setdefault(key, via)
        self.expand(node, lacking, set(req.extras))

    def _choose(self, req: Requirement, lacking: list[str], chain: tuple[str, ...]) -> _Node:
        """The newest version on the index that satisfies `req`, has an sdist and takes the
        targets' Python."""
        assert self.index is not None
        cands = self.index.releases(req.name)
        where = (*chain, req.name)
        if not cands:
            raise DependencyError(where, f"no project named {req.name!r} on the index")
        pythons = sorted({self.targets[t].python for t in lacking})
        usable: dict[str, Candidate] = {}
        for c in cands:
            with contextlib.suppress(InvalidVersion):
                Version(c.version)
                if all(_python_ok(c.requires_python, py) for py in pythons):
                    usable[c.version] = c
        chosen = list(req.specifier.filter(usable))
        if not chosen:
            raise DependencyError(
                where,
                f"no version of {cands[0].name} on the index satisfies "
                f"{req.specifier or 'any version'} with an sdist for Python {', '.join(pythons)}",
                fix="add a wheel that satisfies it to the wheelhouse first",
            )
        best = usable[max(chosen, key=Version)]
        requires = self.index.requires(best.name, best.version)
        return _Node(best.name, best.version, requires, (*chain, best.name), str(req))

    # ordering: each build after the builds it needs; a cycle is an error
    def order(self, root: str) -> list[_Node]:
        out: list[_Node] = []
        state: dict[str, bool] = {}  # False: on the current path; True: ordered

        def visit(key: str, path: tuple[str, ...]) -> None:
            if state.get(key) is True:
                return
            if state.get(key) is False:
                raise DependencyCycle(_first_loop(path))
            state[key] = False
            node = self.nodes[key]
            for child, via in node.edges.items():
                visit(child, (*path, *via, self.nodes[child].name))
            state[key] = True
            out.append(node)

        visit(root, self.nodes[root].chain)
        return out


def _applies(req: Requirement, python: str, extra: str) -> bool:
    """Whether `req` applies to the target for `extra` ("" = the base requirements); one that
    applies without the extra is counted with the base only."""
    if req.marker is None:
        return extra == ""
    env = marker_env(python)
    if not req.marker.evaluate({**env, "extra": extra}):
        return False
    return extra == "" or not req.marker.evaluate(env)


def _python_ok(requires_python: str | None, python: str) -> bool:
    if not requires_python:
        return True
    try:
        return SpecifierSet(requires_python).contains(f"{python}.0", prereleases=True)
    except InvalidSpecifier:
        return True  # pip ignores a malformed Requires-Python too


def _first_loop(path: tuple[str, ...]) -> tuple[str, ...]:
    """`path` up to the first name seen twice: r -> d -> r -> d shows as r -> d -> r."""
    seen: set[str] = set()
    for i, name in enumerate(path):
        key = canonicalize_name(name)
        if key in seen:
            return path[: i + 1]
        seen.add(key)
    return path
