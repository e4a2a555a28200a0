"""Split jobs placed as one, with the real engine: the fixture package (tests/fixtures/isafixture,
its recipe tests/fixtures/recipes/isafixture.toml) built once for its three targets together,
and once per target with `--unplaced`, then placed by `cbuild place`: the same files, the same
sha256, the same folders. Its v4 build holds AVX-512 code, so the evidence keeps the levels."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli.app import app
from builder.manifest import Manifest
from builder.pipeline.job import Pipeline
from builder.pipeline.model import RunReport, WheelRequest
from builder.sources.pypi import sha256_of
from builder.targets.model import resolve
from tests.conftest import FIXTURE_RECIPE

pytestmark = pytest.mark.integration

IDS = ["gentoo2023-generic", "gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4"]
WHEEL = "isafixture-0.1.0+computecanada-cp311-cp311-linux_x86_64.whl"


def run(engine, sdist: Path, ids: list[str], cache: Path, wheelhouse: Path, **kw) -> RunReport:
    req = WheelRequest(
        "isafixture",
        "0.1.0",
        tuple(resolve(ids)),
        wheelhouse,
        cache,
        FIXTURE_RECIPE.parent,
        sdist=sdist,
        jobs=2,
        **kw,
    )
    return Pipeline(engine, lambda t, m: None).run(req)


def placed(wh: Path) -> dict[str, str]:
    """Every wheel under the wheelhouse with its sha256, and its manifest's target and sha256."""
    out = {}
    for p in sorted(wh.rglob("*.whl")):
        m = Manifest.beside(p)
        assert m is not None, p
        out[str(p.relative_to(wh))] = f"{sha256_of(p)} {m.target_id} {m.sha256}"
    return out


def test_split_then_place_equals_one_run(engine, sdist_factory, tmp_path: Path) -> None:
    sdist, cache = sdist_factory(), tmp_path / "cache"
    one = run(engine, sdist, IDS, cache, tmp_path / "one")
    assert one.ok, one.error

    exports = []
    for tid in IDS:  # one job per target, as the workflow's matrix runs them
        out = tmp_path / "jobs" / tid
        r = run(engine, sdist, [tid], cache, tmp_path / "unused", unplaced=out)
        assert r.ok, r.error
        assert not (tmp_path / "unused").exists() or not list((tmp_path / "unused").rglob("*.whl"))
        exports.append(out)

    args = [str(p) for p in exports] + ["--wheelhouse", str(tmp_path / "split")]
    targets = [x for tid in IDS for x in ("--target", tid)]
    res = CliRunner().invoke(app, ["place", *args, *targets, "--explain"])
    assert res.exit_code == 0, res.output

    assert placed(tmp_path / "split") == placed(tmp_path / "one")
    assert sorted(placed(tmp_path / "one")) == [
        f"gentoo2023/x86-64-v3/{WHEEL}",
        f"gentoo2023/x86-64-v4/{WHEEL}",
    ]
    # The figures behind it: AVX-512 in the v4 build, none in the baseline build.
    assert "highest_level: x86-64-v4" in res.output and "baseline_above_baseline: 0" in res.output

    # Placed again without --force: refused, nothing changed.
    before = placed(tmp_path / "split")
    again = CliRunner().invoke(app, ["place", *args, *targets])
    assert again.exit_code == 6 and "pass --force" in again.output
    assert placed(tmp_path / "split") == before

    # A job missing (its target failed): refused, nothing placed.
    partial = CliRunner().invoke(
        app,
        ["place", *[str(p) for p in exports[:2]], "--wheelhouse", str(tmp_path / "p"), *targets],
    )
    assert partial.exit_code == 6 and "incomplete input" in partial.output
    assert not list((tmp_path / "p").rglob("*.whl"))
