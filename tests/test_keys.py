"""Build keys from the bytes of every input, and "up to date" only while none changed."""

from __future__ import annotations

from pathlib import Path

from builder.pipeline.keys import build_key, record_run, target_keys, up_to_date
from builder.pipeline.model import RunReport, Status, TargetResult, WheelRequest
from builder.recipes import load_recipe
from builder.sources import pypi
from builder.targets.model import resolve
from tests.conftest import FIXTURE_RECIPE, make_sdist

V3 = resolve(["gentoo2023-x86-64-v3"])[0]


def request(tmp: Path, sdist: Path, recipes: Path) -> WheelRequest:
    return WheelRequest(
        "isafixture", "0.1.0", (V3,), tmp / "wh", tmp / "cache", recipes, sdist=sdist
    )


def recorded(tmp: Path) -> tuple[WheelRequest, Path, Path]:
    """A run recorded for a local sdist, as the pipeline records it."""
    recipes = tmp / "recipes"
    recipes.mkdir()
    (recipes / "isafixture.toml").write_text(FIXTURE_RECIPE.read_text())
    sdist = make_sdist(tmp / "sdist")
    req = request(tmp, sdist, recipes)
    recipe = load_recipe("isafixture", "0.1.0", recipes)
    sha = pypi.sha256_of(sdist)
    lock = [pypi.LockEntry("isafixture", "0.1.0", sdist.name, sha, "sdist", sdist.as_uri())]
    report = RunReport(
        "isafixture", "0.1.0", [TargetResult(V3, Status.TESTED, sha256="ab")], [], [], tmp, True
    )
    record_run(req, target_keys(req, recipe, lock), lock, report)
    return req, sdist, recipes


def test_changed_local_sdist_with_the_same_name_is_not_up_to_date(tmp_path: Path) -> None:
    req, sdist, recipes = recorded(tmp_path)
    recipe = load_recipe("isafixture", "0.1.0", recipes)
    assert up_to_date(req, recipe).results[0].status is Status.UP_TO_DATE
    original = sdist.read_bytes()
    # One byte of the source, same file name: the last run's lock must not stand in for it.
    make_sdist(sdist.parent, {"README.md": "changed by one byte?"})
    assert sdist.read_bytes() != original
    assert up_to_date(req, recipe) is None
    sdist.write_bytes(original)
    assert up_to_date(req, recipe) is not None


def test_recipe_text_enters_the_key(tmp_path: Path) -> None:
    req, _, recipes = recorded(tmp_path)
    path = recipes / "isafixture.toml"
    path.write_text(path.read_text() + "# a comment is a change of the recipe's text\n")
    assert up_to_date(req, load_recipe("isafixture", "0.1.0", recipes)) is None


def test_patch_bytes_and_missing_patches_enter_the_key(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    (recipes / "patches").mkdir(parents=True)
    (recipes / "patches" / "fix.patch").write_text("--- a/x\n+++ b/x\n")
    (recipes / "isafixture.toml").write_text(
        FIXTURE_RECIPE.read_text() + '\n[build]\npatches = ["fix.patch"]\n'
    )
    recipe = load_recipe("isafixture", "0.1.0", recipes).for_target(V3)
    lock = [pypi.LockEntry("isafixture", "0.1.0", "isafixture-0.1.0.tar.gz", "0" * 64, "sdist")]
    before = build_key(recipe, lock, V3)
    (recipes / "patches" / "fix.patch").write_text("--- a/x\n+++ b/y\n")
    changed = build_key(recipe, lock, V3)
    (recipes / "patches" / "fix.patch").unlink()
    assert len({before, changed, build_key(recipe, lock, V3)}) == 3


def test_locked_build_dependency_bytes_enter_the_key(tmp_path: Path) -> None:
    recipe = load_recipe("isafixture", "0.1.0", FIXTURE_RECIPE.parent).for_target(V3)
    sdist = pypi.LockEntry("isafixture", "0.1.0", "isafixture-0.1.0.tar.gz", "0" * 64, "sdist")
    dep = pypi.LockEntry("cmake", "4.0", "cmake-4.0-py3-none-any.whl", "1" * 64, "build")
    other = pypi.LockEntry("cmake", "4.0", "cmake-4.0-py3-none-any.whl", "2" * 64, "build")
    keys = {build_key(recipe, lock, V3) for lock in ([sdist], [sdist, dep], [sdist, other])}
    assert len(keys) == 3


def test_identical_failures_are_grouped_with_their_targets() -> None:
    from builder.pipeline.model import grouped

    v3, v4, generic = resolve(
        ["gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4", "gentoo2023-generic"]
    )
    results = [
        TargetResult(
            t, Status.FAILED, test_detail=f"No module named 'ns' (log: /w/{t.id}.test.log)"
        )
        for t in (v3, v4)
    ] + [TargetResult(generic, Status.BUILD_FAILED, reason="exit 1")]
    got = grouped(results, lambda r: f"{r.status}: {r.test_detail or r.reason}")
    assert got == [
        ("failed: No module named 'ns' (log: /w/<target>.test.log)", [v3.id, v4.id]),
        ("build-failed: exit 1", [generic.id]),
    ]
