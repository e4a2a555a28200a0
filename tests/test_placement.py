"""Placement rules on real (repaired) wheels and a real wheelhouse in tmp_path."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from builder.errors import PlacementError
from builder.targets.model import load_stack
from builder.wheelhouse.layout import scan
from builder.wheelhouse.placement import Candidate, Decision, explain, place, plan
from builder.wheels.repair import repair_wheel, wheel_content_digest

STACK = load_stack("gentoo2023")
SDE = 1700000000
V3, V4 = "gentoo2023/x86-64-v3", "gentoo2023/x86-64-v4"


def build(
    tmp: Path,
    target_id: str,
    code: bytes,
    dist: str = "biopython",
    version: str = "1.85",
    pure: bool = False,
) -> Path:
    """A repaired wheel as one target's build would give it; `code` stands for what the level's
    compiler made of the sources."""
    raw = tmp / "raw" / target_id
    raw.mkdir(parents=True)
    tag = "py3-none-any" if pure else "cp311-cp311-linux_x86_64"
    info = f"{dist}-{version}.dist-info"
    payload = {f"{dist}/__init__.py": b""}
    if not pure:
        payload[f"{dist}/_core.cpython-311-x86_64-linux-gnu.so"] = code
    files = {
        **payload,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nRoot-Is-Purelib: {str(pure).lower()}\n"
        f"Tag: {tag}\n".encode(),
        f"{info}/RECORD": b"",
    }
    src = raw / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(src, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return repair_wheel(
        src, tmp / "out" / target_id, label="computecanada", source_date_epoch=SDE
    ).path


def cand(tmp: Path, target_id: str, level: str, code: bytes = b"baseline", **kw) -> Candidate:
    wheel = build(tmp, target_id, code, **kw)
    return Candidate(
        target_id, level, wheel, wheel_content_digest(wheel), is_pure=kw.get("pure", False)
    )


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*")
    )


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    wh = tmp_path / "wheelhouse"
    wh.mkdir()
    return wh


def by_target(decisions: list[Decision]) -> dict[str, Decision]:
    return {d.target_id: d for d in decisions}


def test_pure_wheel_placed_once(tmp_path: Path, wheelhouse: Path) -> None:
    cs = [
        cand(tmp_path, t, lv, dist="six", pure=True)
        for t, lv in [("gentoo2023-generic", "generic"), ("gentoo2023-x86-64-v4", "x86-64-v4")]
    ]
    ds = plan(cs, STACK, scan(wheelhouse, STACK))
    assert [d.folder for d in ds] == ["generic", None]
    assert "identical" in ds[1].reason
    placed = place(ds, wheelhouse, cs)
    assert placed == [wheelhouse / "generic" / cs[0].wheel.name]
    assert placed[0].read_bytes() == cs[0].wheel.read_bytes()


def test_identical_levels_give_one_generic_copy(tmp_path: Path, wheelhouse: Path) -> None:
    cs = [
        cand(tmp_path, "gentoo2023-generic", "generic"),
        cand(tmp_path, "gentoo2023-x86-64-v3", "x86-64-v3"),
        cand(tmp_path, "gentoo2023-x86-64-v4", "x86-64-v4"),
    ]
    ds = by_target(plan(cs, STACK, scan(wheelhouse, STACK)))
    assert ds["gentoo2023-generic"].folder == "gentoo2023/generic"
    assert "not level-dependent" in ds["gentoo2023-generic"].reason
    for t in ("gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4"):
        assert ds[t].folder is None and "identical to the baseline" in ds[t].reason
    place(list(ds.values()), wheelhouse, cs)
    assert listing(wheelhouse) == [
        ("gentoo2023", -1),
        ("gentoo2023/generic", -1),
        (f"gentoo2023/generic/{cs[0].wheel.name}", cs[0].wheel.stat().st_size),
    ]


def test_level_dependent_places_every_level_and_no_generic(
    tmp_path: Path, wheelhouse: Path
) -> None:
    cs = [
        cand(tmp_path, "gentoo2023-generic", "generic"),
        cand(tmp_path, "gentoo2023-x86-64-v3", "x86-64-v3"),  # equals the baseline
        cand(tmp_path, "gentoo2023-x86-64-v4", "x86-64-v4", code=b"avx512 code"),
    ]
    ds = by_target(plan(cs, STACK, scan(wheelhouse, STACK)))
    assert ds["gentoo2023-generic"].folder is None
    assert "ambiguous" in ds["gentoo2023-generic"].reason
    assert ds["gentoo2023-x86-64-v3"].folder == V3
    assert "this one too" in ds["gentoo2023-x86-64-v3"].reason
    assert ds["gentoo2023-x86-64-v4"].folder == V4
    placed = place(list(ds.values()), wheelhouse, cs)
    assert placed == [wheelhouse / V3 / cs[1].wheel.name, wheelhouse / V4 / cs[2].wheel.name]
    assert placed[1].read_bytes() == cs[2].wheel.read_bytes()
    assert not (wheelhouse / "gentoo2023" / "generic").exists()


def test_only_level_or_only_generic_targets(tmp_path: Path, wheelhouse: Path) -> None:
    only_v4 = [cand(tmp_path, "gentoo2023-x86-64-v4", "x86-64-v4")]
    assert [d.folder for d in plan(only_v4, STACK, {})] == [V4]
    only_generic = [cand(tmp_path, "gentoo2023-generic", "generic")]
    assert [d.folder for d in plan(only_generic, STACK, {})] == ["gentoo2023/generic"]


def test_generic_copy_refused_when_level_wheels_exist(tmp_path: Path, wheelhouse: Path) -> None:
    old = wheelhouse / V4 / "Biopython-1.84+computecanada-cp311-cp311-linux_x86_64.whl"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"an older level-specific build")
    before = listing(wheelhouse)

    cs = [cand(tmp_path, "gentoo2023-generic", "generic")]
    (d,) = plan(cs, STACK, scan(wheelhouse, STACK))
    assert d.folder is None and d.error
    assert f"{V4}/{old.name}" in d.error
    assert "remove them, or build all targets so the wheel goes to the level folders" in d.error
    with pytest.raises(PlacementError, match="refused, nothing placed") as err:
        place([d], wheelhouse, cs)
    assert old.name in str(err.value)
    assert listing(wheelhouse) == before


def test_all_refusals_reported_and_nothing_written(tmp_path: Path, wheelhouse: Path) -> None:
    cs = [
        cand(tmp_path, "gentoo2023-generic", "generic"),
        cand(tmp_path, "gentoo2023-x86-64-v3", "x86-64-v3", code=b"v3 code"),
        cand(tmp_path, "gentoo2023-x86-64-v4", "x86-64-v4", code=b"v4 code"),
    ]
    for folder in (V3, V4):
        (wheelhouse / folder).mkdir(parents=True)
        (wheelhouse / folder / cs[1].wheel.name).write_bytes(b"older build")
    before = listing(wheelhouse)
    ds = plan(cs, STACK, scan(wheelhouse, STACK))
    refused = [d for d in ds if d.error]
    assert len(refused) == 2 and all("pass --force to replace it" in d.error for d in refused)
    assert f"exists: {V3}/{cs[1].wheel.name}" in refused[0].error
    with pytest.raises(PlacementError) as err:
        place(ds, wheelhouse, cs)
    assert str(err.value).count("exists:") == 2
    assert listing(wheelhouse) == before


def test_force_replaces(tmp_path: Path, wheelhouse: Path) -> None:
    cs = [cand(tmp_path, "gentoo2023-x86-64-v4", "x86-64-v4")]
    dest = wheelhouse / V4 / cs[0].wheel.name
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"older build")
    (d,) = plan(cs, STACK, scan(wheelhouse, STACK), force=True)
    assert d.error is None and d.replace and "replaces" in d.reason
    assert place([d], wheelhouse, cs) == [dest]
    assert dest.read_bytes() == cs[0].wheel.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no temporaries


def test_level_copy_refused_when_same_name_is_generic(tmp_path: Path, wheelhouse: Path) -> None:
    cs = [cand(tmp_path, "gentoo2023-x86-64-v4", "x86-64-v4")]
    generic = wheelhouse / "gentoo2023" / "generic" / cs[0].wheel.name
    generic.parent.mkdir(parents=True)
    generic.write_bytes(b"placed by an earlier run")
    (d,) = plan(cs, STACK, scan(wheelhouse, STACK), force=True)
    assert d.error and "ambiguous" in d.error and str(generic.relative_to(wheelhouse)) in d.error


def test_different_builds_for_one_destination_refused(tmp_path: Path) -> None:
    cs = [
        cand(tmp_path, "gentoo2023-x86-64-v4", "x86-64-v4", code=b"one"),
        cand(tmp_path, "gentoo2023-x86-64-v4-cuda12", "x86-64-v4", code=b"two"),
    ]
    ds = plan(cs, STACK, {})
    assert all(d.error and "different contents" in d.error for d in ds)


def test_unwritable_wheelhouse(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    cs = [cand(tmp_path, "gentoo2023-generic", "generic")]
    wh = afile / "wh"
    ds = plan(cs, STACK, scan(wh, STACK))
    with pytest.raises(PlacementError, match="is a file, not a directory") as err:
        place(ds, wh, cs)
    assert str(wh) in str(err.value) and err.value.fix
    # A file where a folder of the stack goes: refused before anything is written.
    blocked = tmp_path / "blocked"
    (blocked / "gentoo2023").mkdir(parents=True)
    (blocked / "gentoo2023" / "generic").write_text("")
    with pytest.raises(PlacementError, match="gentoo2023/generic is a file"):
        place(ds, blocked, cs)


def test_missing_wheelhouse_is_created_under_a_writable_folder(tmp_path: Path) -> None:
    cs = [cand(tmp_path, "gentoo2023-generic", "generic")]
    wh = tmp_path / "new" / "wheelhouse"
    (placed,) = place(plan(cs, STACK, scan(wh, STACK)), wh, cs)
    assert placed == wh / "gentoo2023/generic" / cs[0].wheel.name and placed.is_file()


def test_failure_while_copying_leaves_no_trace(tmp_path: Path, wheelhouse: Path) -> None:
    cs = [
        cand(tmp_path, "gentoo2023-x86-64-v3", "x86-64-v3", code=b"v3"),
        cand(tmp_path, "gentoo2023-x86-64-v4", "x86-64-v4", code=b"v4"),
    ]
    ds = plan(cs, STACK, {})
    assert [d.folder for d in ds] == [V3, V4]
    os.remove(cs[1].wheel)  # the second copy fails after the first temporary is written
    with pytest.raises(PlacementError, match="could not place"):
        place(ds, wheelhouse, cs)
    assert listing(wheelhouse) == []


def test_explain_says_where_and_why(tmp_path: Path) -> None:
    cs = [
        cand(tmp_path, "gentoo2023-generic", "generic"),
        cand(tmp_path, "gentoo2023-x86-64-v4", "x86-64-v4"),
    ]
    lines = explain(plan(cs, STACK, {}))
    assert lines[0].startswith(f"gentoo2023-generic: {cs[0].wheel.name} -> gentoo2023/generic/: ")
    assert lines[1].startswith(f"gentoo2023-x86-64-v4: {cs[1].wheel.name}: not placed: ")
