"""Every source and the repackaging, end to end with the real engine: a git repository (local,
file://: these hosts reach no git forge), an archive at a URL (a local HTTP server on
127.0.0.1), PyPI's binary wheel of pyzmq 26.2.0 (869 kB, auditwheel vendored libzmq and
libsodium) made a site wheel with its libzmq replaced by Debian's, and a library that links a
sibling package's library, loaded through $ORIGIN in the test's fresh venv."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from builder.pipeline.job import Pipeline
from builder.pipeline.model import RunReport, WheelRequest
from builder.sources import pypi
from builder.targets.model import resolve
from tests.sourcefixtures import bare_repo, http_server, pure_package, tar_gz

pytestmark = pytest.mark.integration
TARGET = "gentoo2023-x86-64-v3"
SIBLINGS = Path(__file__).parent / "fixtures" / "siblings"


def run(engine, tmp: Path, package: str, version: str, recipe: str, **kw) -> RunReport:
    recipes = tmp / "recipes"
    recipes.mkdir(exist_ok=True)
    (recipes / f"{package}.toml").write_text(recipe)
    req = WheelRequest(
        package,
        version,
        tuple(resolve([TARGET])),
        kw.pop("wheelhouse", tmp / "wheelhouse"),
        tmp / "cache",
        recipes,
        **kw,
    )
    seen: list[str] = []
    report = Pipeline(engine, lambda t, m: seen.append(m)).run(req)
    report.seen = seen  # type: ignore[attr-defined]
    return report


def manifest(report: RunReport) -> dict:
    (placed,) = [p for p in report.placed if p.suffix == ".whl"]
    return json.loads(placed.with_name(placed.name + ".json").read_text())


def test_git_source_built_offline_and_locked_by_commit(engine, tmp_path: Path) -> None:
    repo = bare_repo(tmp_path / "git", "gitpkg", pure_package("gitpkg", "1.0"), tag="v1.0")
    recipe = (
        f'[package]\nname = "gitpkg"\n\n[source]\ngit = "{repo.as_uri()}"\nrev = "v{{version}}"\n'
    )
    report = run(engine, tmp_path, "gitpkg", "1.0", recipe)
    assert report.ok, report.error
    (r,) = report.results
    assert r.status == "tested", r.test_detail
    (src,) = [e for e in manifest(report)["lock"] if e["kind"] == "sdist"]
    assert src["url"].startswith(f"git+{repo.as_uri()}@") and len(src["url"].rsplit("@")[1]) == 40
    assert src["sha256"] == pypi.sha256_of(tmp_path / "cache" / "sdists" / src["filename"])
    assert any(m.startswith("git: v1.0 is commit ") for m in report.seen)  # type: ignore[attr-defined]


def test_git_source_of_a_setuptools_scm_project_gets_the_requested_version(
    engine, tmp_path: Path
) -> None:
    """The archive has no .git and no PKG-INFO: setuptools-scm alone would stop the build
    ("unable to detect version"); the requested version stands in for it."""
    files = {
        "pyproject.toml": (
            '[build-system]\nrequires = ["setuptools>=64", "setuptools-scm>=8"]\n'
            'build-backend = "setuptools.build_meta"\n\n'
            '[project]\nname = "scmpkg"\ndynamic = ["version"]\n\n[tool.setuptools_scm]\n'
        ),
        "scmpkg/__init__.py": "",
    }
    repo = bare_repo(tmp_path / "git", "scmpkg", files, tag="v2.1")
    recipe = (
        f'[package]\nname = "scmpkg"\n\n[source]\ngit = "{repo.as_uri()}"\nrev = "v{{version}}"\n'
    )
    report = run(engine, tmp_path, "scmpkg", "2.1", recipe)
    assert report.ok, report.error
    (r,) = report.results
    assert r.status == "tested", r.test_detail
    assert r.build_env["SETUPTOOLS_SCM_PRETEND_VERSION"] == "2.1"
    (placed,) = [p for p in report.placed if p.suffix == ".whl"]
    assert placed.name.startswith("scmpkg-2.1+computecanada-"), placed.name


def test_url_source_any_archive_with_sha256(engine, tmp_path: Path) -> None:
    served = tmp_path / "srv"
    # A GitHub-style tag archive: named by the tag, its folder by the repository.
    arch = tar_gz(served / "v2.0.tar.gz", "urlpkg-repo-2.0", pure_package("urlpkg", "2.0"))
    sha = pypi.sha256_of(arch)
    with http_server(served) as base:
        recipe = (
            '[package]\nname = "urlpkg"\n\n[source]\n'
            f'url = "{base}/v{{version}}.tar.gz"\nsha256 = "{sha}"\nfolder = "urlpkg-repo-2.0"\n'
        )
        report = run(engine, tmp_path, "urlpkg", "2.0", recipe)
    assert report.ok, report.error
    assert report.results[0].status == "tested"
    (src,) = [e for e in manifest(report)["lock"] if e["kind"] == "sdist"]
    assert src["url"].endswith("/v2.0.tar.gz") and src["sha256"] == sha


PYZMQ = """\
[package]
name = "pyzmq"
import_names = ["zmq"]

[source]
binary_wheel = true

[system]
apt = ["libzmq5"]  # Debian's libzmq 4.3.4 replaces the vendored 4.3.5

[wheel]
replace_vendored = ["libzmq*"]

[test]
python = ["assert zmq.zmq_version() == '4.3.4', zmq.zmq_version()"]
"""


@pytest.mark.network
def test_binary_wheel_repackaged_with_a_vendored_library_replaced(engine, tmp_path: Path) -> None:
    report = run(engine, tmp_path, "pyzmq", "26.2.0", PYZMQ)
    assert report.ok, report.error
    (r,) = report.results
    assert r.status == "tested", r.test_detail
    wheel = next(p for p in report.placed if p.suffix == ".whl")
    assert wheel.name == "pyzmq-26.2.0+computecanada-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        tags = zf.read("pyzmq-26.2.0+computecanada.dist-info/WHEEL").decode()
    assert "Tag: cp311-cp311-linux_x86_64" in tags and "manylinux" not in tags
    libs = sorted(n for n in names if n.startswith("pyzmq.libs/"))
    assert len(libs) == 1 and libs[0].startswith("pyzmq.libs/libsodium-")  # kept
    built = manifest(report)["build"]["repackaged"]
    assert built["from"] == "pyzmq-26.2.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert any("replaced by libzmq.so.5" in c for c in built["changes"])
    print("ISA scan of the repackaged pyzmq:", built["isa_highest_level"], "| test:", r.test_how)


def sdist_of(folder: Path, dest: Path, top: str) -> Path:
    files = {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    return tar_gz(dest / f"{top}.tar.gz", top, files)


def test_sibling_library_loads_through_origin_in_the_test_venv(engine, tmp_path: Path) -> None:
    wh = tmp_path / "wheelhouse"
    a = run(
        engine,
        tmp_path,
        "pkga",
        "1.0",
        '[package]\nname = "pkga"\nimport_names = ["pkga"]\n',
        sdist=sdist_of(SIBLINGS / "pkga", tmp_path / "sd", "pkga-1.0"),
    )
    assert a.ok, a.error
    recipe = (
        '[package]\nname = "pkgb"\n\n[wheel]\nrpath_packages = ["pkga/lib"]\n\n'
        '[test]\npython = ["assert pkgb.answer() == 42, pkgb.answer()"]\n'
    )
    b = run(
        engine,
        tmp_path,
        "pkgb",
        "1.0",
        recipe,
        sdist=sdist_of(SIBLINGS / "pkgb", tmp_path / "sd", "pkgb-1.0"),
        find_links=tuple(sorted(p for p in wh.rglob("*") if p.is_dir())),
    )
    assert b.ok, b.error
    (r,) = b.results
    assert r.status == "tested", r.test_detail  # imported in a fresh venv, no LD_LIBRARY_PATH
    assert any("pkga" in e["filename"] for e in manifest(b)["lock"] if e["kind"] == "runtime")
