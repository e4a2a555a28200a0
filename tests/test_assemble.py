"""Split jobs placed as one (`cbuild place DIR...`): real wheels, real manifests and exports in
tmp_path. The real-engine run of the same path is in test_split_integration.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli.app import app
from builder.errors import PlacementError
from builder.manifest import Manifest, TestRecord
from builder.sources.pypi import sha256_of
from builder.targets.model import resolve
from builder.wheelhouse import unplaced
from builder.workflows.assemble import assemble
from tests.test_placement import build

V3, V4 = "gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4"
IDS = ["gentoo2023-generic", V3, V4]


def export(tmp: Path, out: Path, code: dict[str, bytes], status: str = "tested", dist="biopython"):
    """What `cbuild wheel --unplaced OUT` writes for these targets (code: what each built)."""
    wheels, manifests = [], {}
    for tid, data in code.items():
        t = resolve([tid])[0]
        wheel = build(tmp / out.name, tid, data, dist=dist)
        wheels.append((tid, t.level_name, wheel))
        manifests[tid] = Manifest(
            package=dist,
            version="1.85",
            target=t.as_dict(),
            wheel=wheel.name,
            sha256=sha256_of(wheel),
            test=TestRecord(status, "under QEMU"),
        ).to_json()
    return unplaced.write(out, dist, "1.85", "gentoo2023", wheels, manifests)


def tree(wh: Path) -> dict[str, str]:
    return {
        str(p.relative_to(wh)): sha256_of(p)
        for p in sorted(wh.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_split_exports_are_placed_as_one_run(tmp_path: Path) -> None:
    export(tmp_path, tmp_path / "a", {"gentoo2023-generic": b"base", V3: b"base"})
    export(tmp_path, tmp_path / "b", {V4: b"avx512"})
    together = tmp_path / "together"
    export(tmp_path, together, {"gentoo2023-generic": b"base", V3: b"base", V4: b"avx512"})

    split = assemble([tmp_path / "a", tmp_path / "b"], tmp_path / "wh1", expected=IDS)
    one = assemble([together], tmp_path / "wh2", expected=IDS)
    assert [r.error for r in split + one] == [None, None]
    assert tree(tmp_path / "wh1") == tree(tmp_path / "wh2")
    # The "code" here is no ELF: no instruction above the baseline, so the v4 build is the
    # same code as the baseline, whose build alone is placed, in the generic folder.
    names = sorted(tree(tmp_path / "wh1"))
    assert [n.rsplit("/", 1)[0] for n in names] == ["gentoo2023/generic"] * 2
    v4 = {d.target_id: d for d in split[0].decisions}[V4]
    assert v4.folder is None and v4.reason.startswith("same code as the baseline")


def test_a_missing_target_is_refused_and_nothing_placed(tmp_path: Path) -> None:
    export(tmp_path, tmp_path / "a", {"gentoo2023-generic": b"base", V3: b"base"})
    with pytest.raises(
        PlacementError, match=f"incomplete input: biopython 1.85 has no wheel for {V4}"
    ):
        assemble([tmp_path / "a"], tmp_path / "wh", expected=IDS)
    assert not (tmp_path / "wh").exists()


def test_a_partial_export_is_refused(tmp_path: Path) -> None:
    export(tmp_path, tmp_path / "a", {V3: b"base"})
    (tmp_path / "a" / unplaced.EXPORT_FILE).unlink()
    with pytest.raises(PlacementError, match="is in no export"):
        assemble([tmp_path / "a"], tmp_path / "wh")
    export(tmp_path, tmp_path / "b", {V4: b"v4"})
    next((tmp_path / "b").rglob("*.whl")).unlink()
    with pytest.raises(PlacementError, match="which is missing"):
        assemble([tmp_path / "b"], tmp_path / "wh")


def test_conflicting_exports_are_refused(tmp_path: Path) -> None:
    export(tmp_path, tmp_path / "a", {V4: b"one build"})
    export(tmp_path, tmp_path / "b", {V4: b"another build"})
    with pytest.raises(PlacementError, match=f"conflicting input: biopython 1.85 for {V4} twice"):
        assemble([tmp_path / "a", tmp_path / "b"], tmp_path / "wh")


def test_a_changed_wheel_is_refused(tmp_path: Path) -> None:
    (wheel,) = export(tmp_path, tmp_path / "a", {V4: b"v4"})
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    with pytest.raises(PlacementError, match="changed after the export was written"):
        assemble([tmp_path / "a"], tmp_path / "wh")


def test_failed_or_untested_wheels(tmp_path: Path) -> None:
    export(tmp_path, tmp_path / "a", {V4: b"v4"}, status="not-tested")
    (r,) = assemble([tmp_path / "a"], tmp_path / "wh", strict=True)
    assert r.error and "--strict" in r.error and not r.placed
    export(tmp_path, tmp_path / "b", {V4: b"v4"}, status="isa-leak")
    (r,) = assemble([tmp_path / "b"], tmp_path / "wh")
    assert r.error and "isa-leak" in r.error


def test_cli_places_explains_and_refuses_an_existing_wheel(tmp_path: Path) -> None:
    export(tmp_path, tmp_path / "a", {"gentoo2023-generic": b"base", V3: b"base", V4: b"x"})
    args = ["place", str(tmp_path / "a"), "--wheelhouse", str(tmp_path / "wh")]
    every = [x for tid in IDS for x in ("--target", tid)]
    r = CliRunner().invoke(app, [*args, *every, "--explain"])
    assert r.exit_code == 0, r.output
    assert "gentoo2023-generic" in r.output and "-> gentoo2023/generic/" in r.output
    assert "not placed: same code as the baseline" in r.output
    assert "content_digest" in r.output  # the figures behind each decision
    again = CliRunner().invoke(app, [*args, "--json"])
    assert again.exit_code == 6, again.output
    (row,) = json.loads(again.stdout)
    assert "pass --force" in row["error"]
    assert CliRunner().invoke(app, [*args, "--force"]).exit_code == 0
