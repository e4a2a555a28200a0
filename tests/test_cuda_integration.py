"""CUDA variants through the real engine: cuvec 6.0.1 from PyPI built for cuda13 and cuda12 with
the pinned toolkits' image layers, placed side by side, its device code shown by `cbuild
inspect`, and a second build bit-identical; a build that carries no GPU code (fell back to
CPU) fails the device-code check, and an architecture the toolkit does not know is refused
before any build."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli.app import app
from builder.errors import ConfigError
from builder.images.cuda import toolkit_files
from builder.images.python import SOURCES_ENV
from builder.manifest import Manifest
from builder.pipeline.job import Pipeline
from builder.pipeline.model import Status, WheelRequest
from builder.recipes import BUILTIN_RECIPES
from builder.targets.model import resolve

pytestmark = pytest.mark.integration

# Where earlier runs keep the toolkits' pinned files (tests/test_cuda.py uses the same folder).
CACHE = Path(os.environ.get("CBUILD_CUDA_CACHE", "/var/cache/cbuild-cuda"))
CU13, CU12 = "gentoo2023-x86-64-v3-cuda13", "gentoo2023-x86-64-v3-cuda12"


@pytest.fixture(autouse=True)
def toolkit_sources(monkeypatch) -> None:
    """The pinned toolkit files gathered in one folder named by $CBUILD_SOURCES, from where
    earlier runs left them; a file not there is fetched on the host (network), by sha256."""
    folder = CACHE / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    for p in (*toolkit_files("12"), *toolkit_files("13")):
        if not (folder / p.file).is_file():
            for old in CACHE.glob(f"*/{p.file}"):
                shutil.copyfile(old, folder / p.file)  # the layer checks the sha256
                break
    monkeypatch.setenv(SOURCES_ENV, str(folder))


def _request(tmp: Path, package: str, version: str, ids: list[str], recipes, **kw) -> WheelRequest:
    return WheelRequest(
        package,
        version,
        tuple(resolve(ids)),
        tmp / "wheelhouse",
        tmp / "cache",
        recipes,
        jobs=1,
        **kw,
    )


@pytest.mark.network
def test_cuvec_for_cuda13_and_cuda12_placed_proven_and_reproducible(engine, tmp_path) -> None:
    req = _request(tmp_path, "cuvec", "6.0.1", [CU13, CU12], BUILTIN_RECIPES)
    report = Pipeline(engine, lambda t, m: None).run(req)
    assert report.ok, report.error
    folder = tmp_path / "wheelhouse" / "gentoo2023" / "x86-64-v3"
    expect = {
        CU13: ("cuda13", ["sm_80", "sm_90"]),
        CU12: ("cuda12", ["sm_70", "sm_80", "sm_90"]),
    }
    for r in report.results:
        tag, sass = expect[r.target.id]
        assert r.status in (Status.TESTED, Status.NOT_TESTED), r.test_detail
        if r.status is Status.TESTED:  # imported with the toolkit's cudart, no driver
            assert "imported; GPU code not exercised: no GPU" in r.test_detail
        wheel = folder / f"cuvec-6.0.1+{tag}.computecanada-cp311-cp311-linux_x86_64.whl"
        assert wheel.is_file(), sorted(p.name for p in folder.iterdir())
        cuda = Manifest.beside(wheel).build["cuda"]
        assert cuda["promised"]["sass"] == [s.removeprefix("sm_") for s in sass]
        assert cuda["promised"]["ptx"] == ["90"]
        assert cuda["toolkit"]["cuda"].startswith(tag.removeprefix("cuda") + ".")
        carrying = {p: c for p, c in cuda["device_code"].items() if c["sass"]}
        assert carrying and all(c["sass"] == sass for c in carrying.values())
        assert all(c["ptx"] == ["compute_90"] for c in carrying.values())
        shown = CliRunner().invoke(app, ["inspect", str(wheel)])
        assert shown.exit_code == 0, shown.output
        assert f"GPU code: {', '.join(sass)} + PTX compute_90" in shown.output
        as_json = json.loads(CliRunner().invoke(app, ["inspect", "--json", str(wheel)]).stdout)
        assert any(c["sass"] == sass for c in as_json[0]["device_code"])  # one report per wheel

    # The same inputs again, into another wheelhouse: the same bytes.
    again = replace(req, wheelhouse=tmp_path / "again", rebuild=True)
    second = Pipeline(engine, lambda t, m: None).run(again)
    assert second.ok, second.error
    first = {r.target.id: r.sha256 for r in report.results}
    assert {r.target.id: r.sha256 for r in second.results} == first


def _fixture_recipe(tmp: Path, extra: str) -> Path:
    folder = tmp / "recipes"
    folder.mkdir()
    (folder / "isafixture.toml").write_text(
        f'[package]\nname = "isafixture"\nimport_names = ["isafixture"]\n'
        f'accelerators = ["cuda13"]\n{extra}'
    )
    return folder


def test_a_build_without_gpu_code_fails_the_device_code_check(
    engine, sdist_factory, tmp_path
) -> None:
    """The C-extension fixture has no CUDA code: built for a CUDA target, its wheel is what a
    build system that silently fell back to CPU gives."""
    recipes = _fixture_recipe(tmp_path, "")
    req = _request(tmp_path, "isafixture", "0.1.0", [CU13], recipes, sdist=sdist_factory())
    report = Pipeline(engine, lambda t, m: None).run(req)
    assert not report.ok
    (r,) = report.results
    assert r.status is Status.BUILD_FAILED
    assert "carries no device code at all" in r.reason and "fell back to CPU" in r.reason
    assert "promised sm_80, sm_90 + PTX compute_90" in r.reason
    assert not list((tmp_path / "wheelhouse").rglob("*.whl"))


def test_an_architecture_the_toolkit_does_not_know_is_refused_before_any_build(
    engine, sdist_factory, tmp_path
) -> None:
    recipes = _fixture_recipe(tmp_path, '\n[build]\ncuda_archs = "60-real;90"\n')
    req = _request(tmp_path, "isafixture", "0.1.0", [CU13], recipes, sdist=sdist_factory())
    with pytest.raises(ConfigError, match=r"sm_60 is not known to this toolkit") as exc:
        Pipeline(engine, lambda t, m: None).run(req)
    assert "nothing was built" in exc.value.message and "cuda_archs" in (exc.value.fix or "")
    assert not list((tmp_path / "cache").rglob("*.build.log"))  # refused before any build
