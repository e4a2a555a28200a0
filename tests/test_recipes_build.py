"""Recipe fields through the real pipeline: the C fixture (tests/fixtures/isafixture) built by a
real engine with a recipe's patch, pre/post-build commands, PEP 517 config settings, requirement
edits, name suffix, local tag and test code; and a patch that does not apply."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from builder.pipeline.job import Pipeline
from builder.pipeline.model import RunReport, WheelRequest
from builder.targets.model import resolve

pytestmark = pytest.mark.integration

PATCH = Path(__file__).parent / "fixtures" / "legacy" / "patches" / "isafixture-note.patch"
TARGET = "gentoo2023-generic"

RECIPE = """\
[package]
name = "isafixture"
import_names = ["isafixture"]

[build]
patches = ["isafixture-note.patch"]
# The same shell as the build: the export reaches setup.py, the grep sees the patched file.
pre_build = [
    "export ISAFIXTURE_BUILT_FOR=$VERSION",
    "grep -q 'NOTE = \\"patched\\"' src/isafixture/__init__.py",
]
post_build = ["python3 -m zipfile -l $WHEEL | grep -q _kernel"]
# setuptools hands --build-option to bdist_wheel: a build tag in the wheel's name shows it.
config_settings = { "--build-option" = "--build-number=7" }

[wheel]
# The patch adds both requirements; the first does not exist on PyPI, so the runtime fetch
# would fail had it not been removed before it.
remove_requires = ["isafixture-unavailable-dep"]
update_requires = ["packaging>=21"]
suffix = "-patched"
local_tags = ["note"]

[test]
pre_commands = ["python -c 'import packaging'"]
python = ["assert isafixture.NOTE == 'patched'", "assert isafixture.vector_sum([2.0] * 4) == 8.0"]
"""


def run(engine, tmp: Path, recipe: str, patch: bytes, sdist: Path) -> RunReport:
    recipes = tmp / "recipes"
    (recipes / "patches").mkdir(parents=True)
    (recipes / "isafixture.toml").write_text(recipe)
    (recipes / "patches" / "isafixture-note.patch").write_bytes(patch)
    req = WheelRequest(
        "isafixture",
        "0.1.0",
        tuple(resolve([TARGET])),
        tmp / "wheelhouse",
        tmp / "cache",
        recipes,
        sdist=sdist,
    )
    return Pipeline(engine, lambda t, m: None).run(req)


def test_patch_commands_settings_and_wheel_edits_build(engine, sdist_factory, tmp_path) -> None:
    report = run(engine, tmp_path, RECIPE, PATCH.read_bytes(), sdist_factory())
    assert report.ok, report.error
    (r,) = report.results
    assert r.status == "tested", r.test_detail
    log = r.build_log.read_text()
    assert "::cbuild-step:: patch isafixture-note.patch" in log
    assert "::cbuild-step:: post_build 1" in log
    # Suffix, local tag before the site label, and the build tag from the config setting.
    assert r.wheel.name == (
        "isafixture_patched-0.1.0+note.computecanada-7-cp311-cp311-linux_x86_64.whl"
    )
    (placed,) = (tmp_path / "wheelhouse").rglob("*.whl")
    assert placed.name == r.wheel.name
    with zipfile.ZipFile(placed) as zf:
        info = "isafixture_patched-0.1.0+note.computecanada.dist-info"
        meta = zf.read(f"{info}/METADATA").decode()
        init = zf.read("isafixture/__init__.py").decode()
    assert "Name: isafixture-patched\n" in meta
    assert [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist")] == [
        'Requires-Dist: packaging>=21; python_version >= "3.8"'
    ]
    assert 'NOTE = "patched"' in init
    assert "packaging" in {e["name"] for e in report.lock if e["kind"] == "runtime"}
    test_log = r.test_log.read_text()
    assert "::cbuild-step:: pre-test command 1" in test_log
    assert "::cbuild-step:: python 2: assert isafixture.vector_sum" in test_log


def test_a_patch_that_does_not_apply_shows_the_rejected_hunk(
    engine, sdist_factory, tmp_path
) -> None:
    # The context line no longer matches the source: patch rejects the hunk.
    stale = PATCH.read_bytes().replace(b' __version__ = "0.1.0"', b' __version__ = "0.0.9"')
    report = run(engine, tmp_path, RECIPE, stale, sdist_factory())
    assert not report.ok
    (r,) = report.results
    assert r.status == "build-failed"
    assert r.test_detail.startswith(
        "patch isafixture-note.patch does not apply; rejected hunks:"
    ), r.test_detail
    assert '+NOTE = "patched"' in r.test_detail and '__version__ = "0.0.9"' in r.test_detail
    assert "isafixture-note.patch" in report.error
    assert not list((tmp_path / "wheelhouse").rglob("*.whl"))
