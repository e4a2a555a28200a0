"""Recursive builds: the dependencies a package needs that the wheelhouse does not hold for the
targets, found without building, then built first, in dependency order, through the same
pipeline, so that a package and its missing dependencies land together.

Where requirements come from, before any build:
- the sdist's PKG-INFO, when its Metadata-Version is 2.2 or later and `Requires-Dist` is not
  `Dynamic` (PEP 643: a backend must then produce exactly these);
- else pyproject.toml's `[project] dependencies`, when not listed in `dynamic` (PEP 621: static);
- else they are unknown before the build. An older PKG-INFO's `Requires-Dist` is then used as a
  hint for the order, and the built wheel's METADATA, the truth, is checked after the build: what
  it needs and the wheelhouse lacks is built next, and the package is run again if its own run
  failed (its test could not install what was missing).

"Held" is what a node's pip would find: a wheel of a satisfying version (local labels included,
`1.2+computecanada` satisfies `>=1.2`) whose tags the target's Python accepts, in the target's
folders in the layout's order `<stack>/<level>`, `<stack>/generic`, `generic`. A held wheel's
own requirements (its METADATA) are checked too: the node installs them from the same tree.

The planner (`plan`) is pure over an `Index` and a `Wheelhouse`; `build` does the side effects.
"""

from __future__ import annotations

import contextlib
import time
import tomllib
import urllib.parse
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from builder.errors import BuildError, CbuildError, ConfigError, FetchError
from builder.pipeline.job import TEST_FAILED, Pipeline, RunReport, WheelRequest
from builder.recipes.recipe import load_recipe
from builder.sources import pypi
from builder.targets.model import Target
from builder.wheels import edit as wheeledit
from builder.wheels import repair

# --- the target's environment ------------------------------------------------------------------


def marker_env(python: str) -> dict[str, str]:
    """PEP 508 marker values of a target: Linux x86_64, CPython `python` ("3.11"). The micro
    version is unknown here; ".0" makes `python_full_version >= "3.11.4"` false, the safe side."""
    full = f"{python}.0"
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": full,
        "python_version": python,
        "sys_platform": "linux",
        "extra": "",
    }


@cache
def _tags(python: str, glibc: str | None) -> frozenset[Tag]:
    major, minor = (int(x) for x in python.split(".")[:2])
    plats = ["linux_x86_64"]
    if glibc:  # the provider's glibc floor: manylinux wheels up to it run on the target
        top = int(glibc.split(".")[1])
        plats += [f"manylinux_2_{m}_x86_64" for m in range(top, 4, -1)]
        plats += [
            f"manylinux{a}_x86_64" for a, m in (("2014", 17), ("2010", 12), ("1", 5)) if m <= top
        ]
    return frozenset(
        [
            *cpython_tags((major, minor), abis=[f"cp{major}{minor}"], platforms=plats),
            *compatible_tags((major, minor), f"cp{major}{minor}", plats),
        ]
    )


def target_tags(target: Target) -> frozenset[Tag]:
    """The wheel tags the target's pip installs."""
    glibc = target.stack.providers.get(target.provider, {}).get("glibc")
    return _tags(target.python, glibc)


def search_folders(target: Target) -> tuple[str, ...]:
    """The wheelhouse folders a node of `target` reads, in order."""
    s = target.stack
    return tuple(dict.fromkeys((target.folder, s.generic_folder, s.pure_folder)))


def find_links(wheelhouse: Path, targets: Sequence[Target]) -> tuple[Path, ...]:
    """The folders of all the run's targets for the runtime fetch, which is made once for all
    targets: the lowest level first, so that a level-dependent dependency found there (a file
    name the level folders share) runs on every target of the run."""

    def rank(t: Target) -> int:
        return t.stack.levels.index(t.level_name) if t.level_name in t.stack.levels else 0

    folders = dict.fromkeys(f for t in sorted(targets, key=rank) for f in search_folders(t))
    return tuple(wheelhouse / f for f in folders)


# --- what a package requires ---------------------------------------------------------------------


@dataclass(frozen=True)
class Requires:
    requirements: tuple[str, ...]  # PEP 508, as written; a hint only when not `known`
    known: bool  # authoritative before the build
    source: str  # where they came from, for messages
    edited: bool = False  # a built wheel's: repair and the recipe's [wheel] edits already applied


def sdist_requires(sdist: Path) -> Requires:
    """What a package version requires, read from its sdist without building it."""
    facts = pypi.sdist_facts(sdist)
    raw = pypi._read_member(sdist, f"{facts.top_folder}/PKG-INFO")
    meta: dict[str, Any] = {}
    if raw is not None:
        meta, _ = parse_email(raw)
    listed = tuple(meta.get("requires_dist", ()))
    mv = meta.get("metadata_version", "")
    dynamic = {d.lower() for d in meta.get("dynamic", ())}
    with contextlib.suppress(InvalidVersion):
        if Version(mv) >= Version("2.2") and "requires-dist" not in dynamic:
            return Requires(listed, True, f"PKG-INFO {mv}")
    static = _pyproject_requires(sdist, facts.top_folder)
    if static is not None:
        return Requires(static, True, "pyproject.toml [project] dependencies")
    if raw is None:
        why = "no PKG-INFO"
    elif "requires-dist" in dynamic:
        why = f"PKG-INFO {mv} marks Requires-Dist dynamic"
    else:
        why = f"PKG-INFO {mv or '?'}: before 2.2, the build may change Requires-Dist"
    hint = f", which lists {', '.join(listed)}" if listed else ""
    return Requires(listed, False, f"unknown before the build ({why}{hint})")


def _pyproject_requires(sdist: Path, top: str) -> tuple[str, ...] | None:
    raw = pypi._read_member(sdist, f"{top}/pyproject.toml")
    if raw is None:
        return None
    try:
        project = tomllib.loads(raw.decode()).get("project")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(project, dict) or "dependencies" in project.get("dynamic", []):
        return None
    reqs = list(project.get("dependencies", []))
    if "optional-dependencies" not in project.get("dynamic", []):
        for extra, items in project.get("optional-dependencies", {}).items():
            reqs += [_with_extra(r, extra) for r in items]
    return tuple(reqs)


def _with_extra(text: str, extra: str) -> str:
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return text  # kept as written; planning reports it
    cond = f'extra == "{canonicalize_name(extra)}"'
    marker = f"({req.marker}) and {cond}" if req.marker else cond
    req.marker = None
    return f"{req}; {marker}"


def wheel_requires(wheels: Iterable[Path]) -> Requires:
    """The requirements of built wheels (every target's: markers may differ), the truth."""
    out = dict.fromkeys(r for w in wheels for r in repair.requires_dist(w))
    return Requires(tuple(out), True, "the built wheel's METADATA", edited=True)


# --- views of the wheelhouse and of the index ----------------------------------------------------


@dataclass
class Wheelhouse:
    """The wheel file names in each folder; a held wheel's requirements are read on demand
    from `root`, or taken from `given` ("folder/file" -> requirements) for a listing."""

    files: dict[str, set[str]]
    root: Path | None = None
    given: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def scan(cls, root: Path, targets: Sequence[Target]) -> Wheelhouse:
        files: dict[str, set[str]] = {}
        for folder in dict.fromkeys(f for t in targets for f in search_folders(t)):
            path = root / folder
            files[folder] = (
                {p.name for p in path.glob("*.whl") if not p.name.startswith(".") and p.is_file()}
                if path.is_dir()
                else set()
            )
        return cls(files, root)

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
        tags = target_tags(target)
        for folder in search_folders(target):
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


@dataclass(frozen=True)
class Candidate:
    name: str  # as the index spells it
    version: str
    requires_python: str | None


class Index(Protocol):
    def releases(self, name: str) -> list[Candidate]:
        """Every version of `name` with an sdist that is not yanked; [] for no such project."""
        ...

    def requires(self, name: str, version: str) -> Requires: ...


class PyPIIndex:
    """PyPI's JSON API (CBUILD_PYPI_URL); sdists land in the cache the pipeline reads them from,
    so a planned dependency is downloaded once."""

    def __init__(self, cache_dir: Path) -> None:
        self.sdists = cache_dir / "sdists"

    def releases(self, name: str) -> list[Candidate]:
        data = pypi._get_json(f"{pypi.pypi_url()}/pypi/{urllib.parse.quote(name, safe='')}/json")
        if data is None:
            return []
        out = []
        for version, files in data.get("releases", {}).items():
            sdists = [f for f in files if f.get("packagetype") == "sdist" and not f.get("yanked")]
            if sdists:
                out.append(
                    Candidate(data["info"]["name"], version, sdists[0].get("requires_python"))
                )
        return out

    def requires(self, name: str, version: str) -> Requires:
        release = pypi.release_info(name, version)
        return sdist_requires(pypi.download(release.sdist_url, release.sdist_sha256, self.sdists))


# A recipe's [wheel] edits, and repair's, change what the placed wheel requires.
Edits = Callable[[str, str, Target, list[str]], list[str]]


def no_edits(name: str, version: str, target: Target, reqs: list[str]) -> list[str]:
    return reqs


def recipe_edits(recipes_dir: Path) -> Edits:
    def edit(name: str, version: str, target: Target, reqs: list[str]) -> list[str]:
        try:
            recipe = load_recipe(name, version, recipes_dir, target)
        except ConfigError:
            recipe = None  # a bad recipe fails the package's own build, with its message
        remove = ("nvidia-*", *(recipe.remove_requires if recipe else ()))
        edits = wheeledit.WheelEdits(
            add=recipe.add_requires if recipe else (),
            remove=remove,
            update=recipe.update_requires if recipe else (),
        )
        return wheeledit.edit_requirements(reqs, edits)[0]

    return edit


# --- the plan ------------------------------------------------------------------------------------


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


# --- building ------------------------------------------------------------------------------------


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
    lock = req.cache / "locks" / f"{canonicalize_name(req.package)}-{req.version}.json"
    with contextlib.suppress(OSError, ConfigError):
        for e in pypi.Lock.from_json(lock.read_text()).of_kind("sdist"):
            path = req.cache / "sdists" / e.filename
            if path.is_file() and pypi.sha256_of(path) == e.sha256:
                return path
    release = pypi.release_info(req.package, req.version)
    return pypi.download(release.sdist_url, release.sdist_sha256, req.cache / "sdists")


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
    for d in (req.cache / "work").glob("*"):
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
                str(r.test_log if r.status in TEST_FAILED else r.build_log)
                for r in report.results
                if r.status in {"build-failed", *TEST_FAILED}
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


__all__ = [
    "DependencyCycle",
    "DependencyError",
    "Index",
    "Missing",
    "Outcome",
    "Plan",
    "PyPIIndex",
    "Requires",
    "Step",
    "Wheelhouse",
    "build",
    "find_links",
    "marker_env",
    "plan",
    "sdist_requires",
    "search_folders",
]
