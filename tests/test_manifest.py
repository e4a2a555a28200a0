"""The manifest beside a wheel: today's manifests (no schema_version) load, a newer schema is
refused clearly, what is written keeps its field order, and the pipeline's statuses stay the
strings reports and manifests have always said."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.manifest import SCHEMA_VERSION, Manifest, ManifestError, TestRecord, manifest_path
from builder.pipeline.model import RunReport, Status, TargetResult
from builder.targets.model import resolve

V3 = resolve(["gentoo2023-x86-64-v3"])[0]

# A manifest as cbuild wrote it before schema_version (fields in the writer's order).
OLD = {
    "package": "pkg",
    "version": "1.0",
    "target": V3.as_dict(),
    "wheel": "pkg-1.0-cp311-cp311-linux_x86_64.whl",
    "sha256": "ab" * 32,
    "engine": "podman 5.0",
    "network_isolated": True,
    "image": "cbuild/x:1",
    "image_id": "sha256:1",
    "image_spec_hash": "f00",
    "provider": "standalone",
    "test": {"status": "tested", "how": "natively", "detail": "passed natively"},
    "source_date_epoch": 1700000000,
    "lock": [{"name": "pkg", "version": "1.0", "kind": "sdist"}],
    "build": {"key": "k", "built_on": V3.id, "gcc": "gcc 12"},
    "python": "3.11.2",
    "recipe": {"resolved": {}, "file": None, "patches": {}},
    "edits": [["added requirement x"]],
}


def test_path_is_beside_the_wheel() -> None:
    assert manifest_path(Path("/w/a-1.0-py3-none-any.whl")) == Path(
        "/w/a-1.0-py3-none-any.whl.json"
    )


def test_an_old_manifest_loads_and_writes_back_the_same_fields(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(OLD, indent=2) + "\n")
    m = Manifest.load(path)
    assert m.schema_version == 1 and m.target_id == V3.id and m.built_target() == V3
    assert m.test == TestRecord("tested", "natively", "passed natively")
    assert m.build["gcc"] == "gcc 12" and m.edits == [["added requirement x"]]
    assert m.missing(("package", "lock", "image_spec_hash")) == []
    # Written again: schema_version first, then every field as it was, in the same order.
    assert m.to_json() == json.dumps({"schema_version": 1, **OLD}, indent=2) + "\n"


def test_unknown_fields_are_kept_and_missing_ones_named(tmp_path: Path) -> None:
    m = Manifest.from_dict({"target": {"id": "x"}, "note": "by hand"})
    assert m.missing(("target", "image_spec_hash", "lock")) == ["image_spec_hash", "lock"]
    assert m.as_dict() == {"schema_version": 1, "target": {"id": "x"}, "note": "by hand"}


def test_a_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**OLD, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ManifestError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        Manifest.load(path)
    path.write_text(json.dumps({**OLD, "schema_version": "one"}))
    with pytest.raises(ManifestError, match="invalid schema_version"):
        Manifest.load(path)


def test_unreadable_manifests(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="unreadable"):
        Manifest.load(path)
    path.write_text("[1]")
    with pytest.raises(ManifestError, match="not a JSON object"):
        Manifest.load(path)
    assert Manifest.beside(tmp_path / "none.whl") is None


def test_statuses_are_the_strings_reports_say() -> None:
    assert [s.value for s in Status] == [
        "pending",
        "built",
        "tested",
        "not-tested",
        "build-failed",
        "failed",
        "isa-leak",
        "up to date",
    ]
    assert {s for s in Status if s.failed} == {Status.BUILD_FAILED, Status.FAILED, Status.ISA_LEAK}
    assert {s for s in Status if s.test_failed} == {Status.FAILED, Status.ISA_LEAK}
    r = TargetResult(V3, status="isa-leak")  # given as its string
    assert r.status is Status.ISA_LEAK and f"{r.status}" == "isa-leak"
    assert json.dumps(r.as_dict()["status"]) == '"isa-leak"'
    report = RunReport("p", "1", [r], [], [], Path("."), ok=False)
    assert report.exit_code == 7
