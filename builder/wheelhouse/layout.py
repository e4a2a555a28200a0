"""The wheelhouse's layout, in one place: a stack's folders, the order a node's pip reads them,
the wheel tags a target accepts, the scan of the tree, and whether this user can place into it.

Pure over the stack data except `scan`, `wheelhouse_root` and `check_writable`, which only read
the file system. The lock that serializes placements is `lock.py` beside this module;
placement's rules live in `placement.py`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags

from builder.errors import ConfigError, PlacementError
from builder.providers import PROVIDERS, cvmfs_env, get_provider
from builder.targets.model import Stack, Target

GENERIC = "generic"  # the level name of a stack's baseline build

# manylinux's legacy aliases and the glibc minor each stands for (PEP 600).
_LEGACY_MANYLINUX = (("2014", 17), ("2010", 12), ("1", 5))


# --- folders -----------------------------------------------------------------------------------


def level_folders(stack: Stack) -> tuple[str, ...]:
    """The folders of the stack's CPU levels (not its generic folder)."""
    return tuple(stack.folder_for_level(lv) for lv in stack.levels if lv != GENERIC)


def levels_above_baseline(stack: Stack) -> tuple[str, ...]:
    """The stack's levels above its baseline (the level its generic folder is compiled for):
    the levels whose own builds may hold code a baseline node cannot run."""
    named = [lv for lv in stack.levels if lv != GENERIC]
    if stack.baseline_level not in named:
        return tuple(named)
    return tuple(named[named.index(stack.baseline_level) + 1 :])


def level_aliases(stack: Stack, name: str) -> tuple[str, ...]:
    """Other names the stack's providers give a level in their folders (CVMFS: `avx512` for
    x86-64-v4, from the stack file's `arch_values`)."""
    if cvmfs_env.PROVIDER not in stack.providers:
        return ()
    try:
        values = dict(cvmfs_env.settings(stack).arch_values)
    except ConfigError:
        return ()
    return (values[name],) if name in values else ()


def stack_folders(stack: Stack) -> tuple[str, ...]:
    """Every folder the stack uses: pure, generic, then each level."""
    return tuple(dict.fromkeys((stack.pure_folder, stack.generic_folder, *level_folders(stack))))


def search_folders(target: Target) -> tuple[str, ...]:
    """The folders a node of `target` reads, in pip's order: `<stack>/<level>`,
    `<stack>/generic`, the pure folder."""
    s = target.stack
    return tuple(dict.fromkeys((target.folder, s.generic_folder, s.pure_folder)))


def run_search_folders(targets: Sequence[Target]) -> tuple[str, ...]:
    """The folders of all targets of one run, the lowest level first: a fetch made once for all
    of them then takes a level-dependent file name from the folder every target can run."""

    def rank(t: Target) -> int:
        return t.stack.levels.index(t.level_name) if t.level_name in t.stack.levels else 0

    return tuple(dict.fromkeys(f for t in sorted(targets, key=rank) for f in search_folders(t)))


def find_links(wheelhouse: Path, targets: Sequence[Target]) -> tuple[Path, ...]:
    """`run_search_folders` as paths under `wheelhouse`, for pip's --find-links."""
    return tuple(Path(wheelhouse) / f for f in run_search_folders(targets))


# --- tags --------------------------------------------------------------------------------------


def glibc_floor(target: Target) -> str | None:
    """The glibc the target's provider guarantees ("2.36"), as the provider reads it from the
    stack data; None when it states none or is not a registered provider yet."""
    if target.provider not in PROVIDERS:
        return None
    return get_provider(target.provider).glibc_floor(target.stack)


def accepted_tags(target: Target) -> frozenset[Tag]:
    """The wheel tags the target's pip installs: CPython `target.python` on x86_64 Linux, and
    manylinux only up to the provider's glibc floor; a provider that states none gets no
    manylinux tag (a guess could accept a wheel that does not load on the node)."""
    return _tags(target.python, glibc_floor(target))


@cache
def _tags(python: str, glibc: str | None) -> frozenset[Tag]:
    major, minor = (int(x) for x in python.split(".")[:2])
    plats = ["linux_x86_64"]
    if glibc:
        top = int(glibc.split(".")[1])
        plats += [f"manylinux_2_{m}_x86_64" for m in range(top, 4, -1)]
        plats += [f"manylinux{a}_x86_64" for a, m in _LEGACY_MANYLINUX if m <= top]
    # The ABI is the target's CPython, never the host interpreter's (debug or free-threaded).
    abi = f"cp{major}{minor}"
    return frozenset(
        [
            *cpython_tags((major, minor), abis=[abi], platforms=plats),
            *compatible_tags((major, minor), abi, plats),
        ]
    )


# --- the tree ----------------------------------------------------------------------------------


def wheel_names(folder: Path) -> set[str]:
    """The wheel file names in one folder; a missing folder is empty, and dot files (a
    placement's temporaries) are not wheels."""
    if not folder.is_dir():
        return set()
    return {
        p.name
        for p in folder.iterdir()
        if p.name.endswith(".whl") and not p.name.startswith(".") and p.is_file()
    }


def scan_folders(wheelhouse: Path, folders: Iterable[str]) -> dict[str, set[str]]:
    """The wheel names in each of `folders` (relative to `wheelhouse`)."""
    return {f: wheel_names(Path(wheelhouse) / f) for f in dict.fromkeys(folders)}


def scan(wheelhouse: Path, stack: Stack) -> dict[str, set[str]]:
    """The wheel names in each folder the stack uses: what placement decides from."""
    return scan_folders(wheelhouse, stack_folders(stack))


def wheelhouse_root(wheel: Path, stack: Stack) -> Path | None:
    """The wheelhouse a placed wheel lies in, from the stack folder it is in; None when it is in
    none. The deepest folder is tried first: `gentoo2023/generic` also ends in `generic`."""
    parent = Path(wheel).resolve().parent
    for folder in sorted(stack_folders(stack), key=lambda f: -len(Path(f).parts)):
        parts = Path(folder).parts
        if parent.parts[-len(parts) :] == parts:
            return Path(*parent.parts[: -len(parts)])
    return None


# --- writable ----------------------------------------------------------------------------------


def check_writable(wheelhouse: Path, folders: Iterable[str] = ()) -> None:
    """Refuse, with a fix, a wheelhouse this user cannot place into. A missing wheelhouse (or
    folder of it) is fine when its nearest existing parent is a writable folder: placing creates
    it. Refused: a file (or a dangling link) in the way, a folder this user cannot write."""
    wheelhouse = Path(wheelhouse)
    for path in (wheelhouse, *(wheelhouse / f for f in folders)):
        _check_one(wheelhouse, path)


def _check_one(wheelhouse: Path, path: Path) -> None:
    probe = path
    while not os.path.lexists(probe):  # lexists: a dangling link is in the way, not missing
        probe = probe.parent
    other = "" if probe == wheelhouse else f"{probe} "
    if not probe.is_dir():
        what = "a dangling link" if probe.is_symlink() and not probe.exists() else "a file"
        raise PlacementError(
            f"wheelhouse {wheelhouse} is not writable: {other or 'it '}is {what}, not a directory",
            fix=f"move {probe} away, or pass --wheelhouse DIR with a folder you can write to",
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PlacementError(
            f"wheelhouse {wheelhouse} is not writable: {other or 'it '}is read-only for this user",
            fix=f"run as its owner, grant write access (chmod u+w {probe}), or pass "
            "--wheelhouse DIR with a folder you can write to",
        )


__all__ = [
    "GENERIC",
    "accepted_tags",
    "check_writable",
    "find_links",
    "glibc_floor",
    "level_aliases",
    "level_folders",
    "levels_above_baseline",
    "run_search_folders",
    "scan",
    "scan_folders",
    "search_folders",
    "stack_folders",
    "wheel_names",
    "wheelhouse_root",
]
