"""The wheelhouse lock with real processes and real files: placements that race for one
wheelhouse lose nothing, overwrite nothing without --force and never break the
generic-vs-level rule; the message of a placement that cannot get the lock names the holder."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from builder.errors import PlacementError
from builder.targets.model import load_stack
from builder.wheelhouse import lock, placement
from builder.wheelhouse.layout import level_folders, scan
from builder.wheelhouse.placement import Candidate
from builder.wheels.repair import wheel_content_digest
from tests.test_placement import build

STACK = load_stack("gentoo2023")
SPAWN = mp.get_context("spawn")  # fresh interpreters: no lock state shared with this one


def _cands(tmp: Path, who: str, dist: str, shape: str) -> list[Candidate]:
    """One run's builds: `generic` (a baseline build only: goes to the generic folder) or
    `levels` (level builds that differ: each to its level folder)."""
    ids = {"generic": ["generic"], "levels": ["x86-64-v3", "x86-64-v4"]}[shape]
    out = []
    for lv in ids:
        wheel = build(tmp / who, f"gentoo2023-{lv}", f"{who} {lv}".encode(), dist=dist)
        out.append(Candidate(f"gentoo2023-{lv}", lv, wheel, wheel_content_digest(wheel), False))
    return out


def _place(args: tuple) -> tuple[str, str, list[str], str | None]:
    """One placing process: wait at the barrier, then scan, plan and place. `window` holds
    every placement between its plan and its renames, so that without the lock every process
    would decide from the same empty scan."""
    tmp, wh, who, dist, shape, window, locked, start = args
    cands = _cands(Path(tmp), who, dist, shape)
    real_place = placement.place

    def slow_place(*a, **kw):
        time.sleep(window)
        return real_place(*a, **kw)

    placement.place = slow_place
    if not locked:
        placement.wheelhouse_lock = lambda *a, **kw: contextlib.nullcontext()
    while time.time() < start:
        time.sleep(0.005)
    try:
        _, placed = placement.commit(cands, STACK, Path(wh), what=f"test {who}")
        return who, shape, [str(p.relative_to(wh)) for p in placed], None
    except PlacementError as exc:
        return who, shape, [], exc.message


def _race(tmp: Path, runs: list[tuple[str, str, str]], locked: bool = True) -> list[tuple]:
    wh = tmp / "wheelhouse"
    wh.mkdir()
    start = time.time() + 4  # every child imported and its wheels built before it
    args = [(str(tmp), str(wh), who, dist, shape, 0.3, locked, start) for who, dist, shape in runs]
    with SPAWN.Pool(len(runs)) as pool:
        return pool.map(_place, args)


def _check_rules(wh: Path) -> dict[str, set[str]]:
    index = scan(wh, STACK)
    generic = index[STACK.generic_folder]
    for folder in level_folders(STACK):
        assert not generic & index[folder], f"one file name in generic and {folder}"
    return index


def test_racing_placements_of_one_package_keep_the_rules(tmp_path: Path) -> None:
    runs = [(f"p{i}", "biopython", "generic" if i % 2 else "levels") for i in range(6)]
    results = _race(tmp_path, runs)
    index = _check_rules(tmp_path / "wheelhouse")
    winners = [r for r in results if r[3] is None]
    # Exactly one run placed; each other one was refused, for a reason the rules give.
    assert len(winners) == 1, results
    for _, _, placed, error in results:
        if error is not None:
            assert not placed
            assert any(
                s in error for s in ("pass --force", "refusing a generic copy", "ambiguous")
            ), error
    # The wheelhouse holds the winner's bytes, unchanged by the refused ones.
    who, shape, placed, _ = winners[0]
    assert sorted(placed) == sorted(f"{f}/{n}" for f, names in index.items() for n in names)
    for rel in placed:
        level = "generic" if "/generic/" in rel else rel.split("/")[1]
        ours = build(tmp_path / "expect" / who, f"gentoo2023-{level}", f"{who} {level}".encode())
        assert (tmp_path / "wheelhouse" / rel).read_bytes() == ours.read_bytes()


def test_racing_placements_of_different_packages_all_land(tmp_path: Path) -> None:
    runs = [(f"q{i}", f"pkg{i}", "levels" if i % 2 else "generic") for i in range(6)]
    results = _race(tmp_path, runs)
    assert all(r[3] is None for r in results), results
    index = _check_rules(tmp_path / "wheelhouse")
    assert sum(len(v) for v in index.values()) == sum(len(r[2]) for r in results) == 9
    assert not [p for p in (tmp_path / "wheelhouse").rglob(".*") if p.name != lock.LOCK_NAME]


def test_without_the_lock_the_same_race_breaks_the_rules(tmp_path: Path) -> None:
    """The control: the race above is real. Without the lock, every process decides from the
    same scan, and a generic copy lands beside level copies of the same file name."""
    runs = [(f"p{i}", "biopython", "generic" if i % 2 else "levels") for i in range(4)]
    results = _race(tmp_path, runs, locked=False)
    index = scan(tmp_path / "wheelhouse", STACK)
    both = index[STACK.generic_folder] & set().union(*(index[f] for f in level_folders(STACK)))
    overwritten = sum(1 for r in results if r[3] is None) > 1
    assert both or overwritten, results


def _hold(wh: str, ready, release) -> None:
    with lock.wheelhouse_lock(Path(wh), "cbuild wheel holder 1.0"):
        ready.set()
        release.wait(30)


def test_a_held_lock_times_out_naming_its_holder(tmp_path: Path) -> None:
    ready, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        t0 = time.monotonic()
        with pytest.raises(PlacementError) as exc, lock.wheelhouse_lock(tmp_path, timeout=0.5):
            pass
        assert 0.5 <= time.monotonic() - t0 < 5
        assert f"pid {holder.pid} on {os.uname().nodename}" in exc.value.message
        assert "cbuild wheel holder 1.0" in exc.value.message
        assert "CBUILD_LOCK_TIMEOUT" in (exc.value.fix or "")
    finally:
        release.set()
        holder.join(30)
    # Released (and the kernel releases a dead holder's lock too): taken at once.
    with lock.wheelhouse_lock(tmp_path, timeout=0):
        assert "pid" in lock.holder(tmp_path)
    assert lock.holder(tmp_path) == ""


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    ready, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(30)
    holder.kill()
    holder.join(30)
    with lock.wheelhouse_lock(tmp_path, timeout=2):
        pass


def test_threads_of_one_process_are_serialized(tmp_path: Path) -> None:
    import threading

    inside, most = [0], [0]
    guard = threading.Lock()

    def work() -> None:
        with lock.wheelhouse_lock(tmp_path, timeout=30):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
