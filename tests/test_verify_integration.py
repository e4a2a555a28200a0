"""`cbuild rebuild` and `cbuild verify` end to end: a wheel placed by the pipeline (real engine,
the C fixture) is rebuilt from its manifest alone in fresh containers and a fresh temporary
cache, and compared bit for bit.

Two placed wheels (one pipeline run each, module scope): the fixture as cbuild builds it, which
must be reproduced exactly, and one built WITHOUT the reproducibility settings: its recipe sets
SOURCE_DATE_EPOCH to the build's own wall clock and its source embeds __DATE__ __TIME__, so
every build's .so differs in .rodata, and verify must say so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.pipeline.job import Pipeline
from builder.pipeline.model import WheelRequest
from builder.sources import pypi
from builder.targets.model import resolve

pytestmark = pytest.mark.integration

RECIPE = """\
[package]
name = "isafixture"
import_names = ["isafixture"]

[test]
commands = ['python -c "import isafixture; print(isafixture.compiled_level())"']
"""
# The build's own wall clock instead of the sdist's time: what a build script that exports
# SOURCE_DATE_EPOCH=$(date +%s) does, and __DATE__/__TIME__ then record it.
UNREPRODUCIBLE = RECIPE.replace(
    "[test]", '[build]\npre_build = ["export SOURCE_DATE_EPOCH=$(date +%s)"]\n\n[test]'
)
STAMPED = '\n__attribute__((used)) const char isafixture_built_at[] = __DATE__ " " __TIME__;\n'
WHEEL = "isafixture-0.1.0+computecanada-cp311-cp311-linux_x86_64.whl"
SO = "isafixture/_kernel.cpython-311-x86_64-linux-gnu.so"
TARGET = "gentoo2023-x86-64-v3"


def cli(*args: str, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`tmp`: the temporary folder of the rebuild, which a failed rebuild keeps for its logs."""
    env = {**os.environ, "TMPDIR": str(tmp)} if tmp else None
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def _place(engine, tmp: Path, recipe: str, edits: dict[str, str] | None = None) -> Path:
    from tests.conftest import make_sdist

    (tmp / "recipes").mkdir()
    (tmp / "recipes" / "isafixture.toml").write_text(recipe)
    req = WheelRequest(
        "isafixture",
        "0.1.0",
        tuple(resolve([TARGET])),
        tmp / "wheelhouse",
        tmp / "cache",
        tmp / "recipes",
        sdist=make_sdist(tmp / "sdist", edits),
    )
    report = Pipeline(engine, lambda t, m: None).run(req)
    assert report.ok, report.error
    return tmp / "wheelhouse" / "gentoo2023/x86-64-v3" / WHEEL


@pytest.fixture(scope="module")
def placed(engine, tmp_path_factory) -> Path:
    return _place(engine, tmp_path_factory.mktemp("reproducible"), RECIPE)


@pytest.fixture(scope="module")
def unreproducible(engine, tmp_path_factory) -> Path:
    from tests.conftest import FIXTURE_SRC

    kernel = (FIXTURE_SRC / "src/isafixture/_kernel.c").read_text() + STAMPED
    tmp = tmp_path_factory.mktemp("unreproducible")
    return _place(engine, tmp, UNREPRODUCIBLE, {"src/isafixture/_kernel.c": kernel})


def cache_of(wheel: Path) -> Path:
    return wheel.parents[3] / "cache"


def test_manifest_records_what_a_rebuild_needs(placed) -> None:
    m = json.loads(placed.with_name(placed.name + ".json").read_text())
    build = m["build"]
    assert len(build["key"]) == 64 and build["built_on"] == TARGET
    assert build["env"]["SOURCE_DATE_EPOCH"] == str(m["source_date_epoch"])
    assert "-march=x86-64-v3" in build["env"]["CFLAGS"]
    assert build["gcc"].startswith("gcc ") and m["python"].startswith("3.11.")
    assert "-march=x86-64-v3" in build["first_compile_command"]
    assert "-ffile-prefix-map=" in build["effective_cflags"]
    assert m["recipe"]["file"] == RECIPE
    assert m["recipe"]["resolved"]["resolved_for"] == {"version": "0.1.0", "target": TARGET}


def test_rebuild_reproduces_the_sha256(placed, tmp_path) -> None:
    res = cli(
        "rebuild", str(placed), "--out", str(tmp_path / "out"), "--cache", str(cache_of(placed))
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    placed_sha, rebuilt_sha = lines[0].split()[1], lines[1].split()[1]
    assert placed_sha == rebuilt_sha == pypi.sha256_of(placed)
    assert lines[2] == "identical"
    assert (tmp_path / "out" / WHEEL).read_bytes() == placed.read_bytes()


def test_verify_package_version_target_says_identical(placed) -> None:
    """The rebuild ran from a fresh temporary folder (not the build's cache) with exactly the
    manifest's locked inputs."""
    wh = placed.parents[2]
    res = cli(
        "verify",
        "isafixture",
        "0.1.0",
        "--target",
        TARGET,
        "--wheelhouse",
        str(wh),
        "--cache",
        str(cache_of(placed)),
        "--keep",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["identical"] and out["comparison"]["members"] == []
    assert out["placed_sha256"] == out["rebuilt_sha256"]
    folder = Path(res.stderr.split("rebuild kept in ", 1)[1].split()[0])
    try:
        assert not folder.is_relative_to(cache_of(placed))
        (work,) = (folder / "cache/work").glob("isafixture-0.1.0/*")
        rebuilt_lock = json.loads((work / "lock.json").read_text())["entries"]
        recorded = json.loads(placed.with_name(placed.name + ".json").read_text())["lock"]
        kinds = ("sdist", "build")
        assert sorted((e["filename"], e["sha256"]) for e in rebuilt_lock if e["kind"] in kinds) == (
            sorted((e["filename"], e["sha256"]) for e in recorded if e["kind"] in kinds)
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_verify_pinpoints_an_unreproducible_build(unreproducible) -> None:
    res = cli("verify", str(unreproducible), "--cache", str(cache_of(unreproducible)))
    assert res.returncode == 1, res.stderr
    out = res.stdout
    assert "DIFFERENT: 2 of 6 files in the wheel differ" in out
    assert f"  {SO}: ELF" in out
    assert ".rodata: content differs" in out
    assert "hint: constant data differs (.rodata)" in out
    assert "__DATE__/__TIME__" in out
    # The two times themselves, as __DATE__ " " __TIME__ wrote them.
    placed = [ln for ln in out.splitlines() if "only in placed :" in ln]
    rebuilt = [ln for ln in out.splitlines() if "only in rebuilt:" in ln]
    assert placed and rebuilt and placed[0][-10:-1] != rebuilt[0][-10:-1]
    # RECORD follows: the .so's hash line, as a unified diff.
    assert "+++ rebuilt/isafixture-0.1.0+computecanada.dist-info/RECORD" in out
    assert f"-{SO},sha256=" in out and f"+{SO},sha256=" in out
    assert "METADATA" not in out.split("RECORD", 1)[0]  # metadata is the same


def _copy(wheel: Path, dest: Path, edit) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wheel, dest / wheel.name)
    manifest = json.loads(wheel.with_name(wheel.name + ".json").read_text())
    edit(manifest)
    (dest / f"{wheel.name}.json").write_text(json.dumps(manifest))
    return dest / wheel.name


def test_rebuild_refuses_a_build_input_that_is_not_the_locked_one(placed, tmp_path) -> None:
    def wrong_setuptools(m) -> None:
        (e,) = [e for e in m["lock"] if e["name"] == "setuptools"]
        e["sha256"] = "0" * 64

    wheel = _copy(placed, tmp_path / "w", wrong_setuptools)
    res = cli("verify", str(wheel), "--cache", str(cache_of(placed)), tmp=tmp_path)
    assert res.returncode == 3, res.stderr
    assert "rebuild folder kept for its logs: " + str(tmp_path) in res.stderr
    assert "the build inputs differ from the locked ones" in res.stderr
    assert "the lock says " + "0" * 64 in res.stderr


def test_rebuild_without_the_locked_sdist_says_where_to_put_it(placed, tmp_path) -> None:
    def gone(m) -> None:
        (e,) = [e for e in m["lock"] if e["kind"] == "sdist"]
        e["url"] = (tmp_path / "nowhere" / e["filename"]).as_uri()

    wheel = _copy(placed, tmp_path / "w", gone)
    res = cli("rebuild", str(wheel), "--cache", str(tmp_path / "empty-cache"), tmp=tmp_path)
    assert res.returncode == 3, res.stderr
    assert "the locked sdist isafixture-0.1.0.tar.gz could not be had" in res.stderr
    assert "pass it with --sdist" in res.stderr
