"""`cbuild wheel --recursive` end to end: a real engine, real compilers, a local PyPI-shaped index
on 127.0.0.1 serving the sdists (CBUILD_PYPI_URL); pip in the containers still fetches the build
requirements (setuptools, wheel) from the real PyPI. One target keeps it cheap.

`isadep` is the C fixture (tests/fixtures/isafixture) under another distribution name (its
module is still `isafixture`); `usesdep` is pure, imports it, and says so in a Metadata-Version
2.2 PKG-INFO. Neither name exists on PyPI, so only the wheelhouse can give the dependency to
usesdep's test.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli import app as cli
from tests.conftest import FIXTURE_SRC
from tests.test_recursive import LocalIndex, pkg_info, pure_sdist, write_sdist

pytestmark = pytest.mark.integration

TARGET = "gentoo2023-generic"
ISADEP = "isadep-0.1.0+computecanada-cp311-cp311-linux_x86_64.whl"
USESDEP = "usesdep-1.0+computecanada-py3-none-any.whl"
USES_CODE = "from isafixture import vector_sum\n\n\ndef total(xs):\n    return vector_sum(xs)\n"


def isadep_sdist(dest: Path, edits: dict[str, str] | None = None) -> Path:
    files: dict[str, str | bytes] = {
        p.relative_to(FIXTURE_SRC).as_posix(): p.read_bytes()
        for p in sorted(FIXTURE_SRC.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    files["pyproject.toml"] = (
        FIXTURE_SRC.joinpath("pyproject.toml")
        .read_text()
        .replace('name = "isafixture"', 'name = "isadep"')
    )
    files["PKG-INFO"] = pkg_info("isadep", "0.1.0", "2.2")
    files.update(edits or {})
    return write_sdist(dest, "isadep", "0.1.0", files)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.whl"))


def cbuild(tmp: Path, *args: str) -> tuple[int, str, str]:
    recipes = tmp / "recipes"
    recipes.mkdir(exist_ok=True)
    (recipes / "usesdep.toml").write_text(
        '[package]\nname = "usesdep"\n[test]\ncommands = [\'python -c "import usesdep; '
        "assert usesdep.total([1.0] * 9 + [0.5] * 4) == 11.0\"']\n"
    )
    res = CliRunner().invoke(
        cli.app,
        [
            "wheel",
            *args,
            "-t",
            TARGET,
            "--engine",
            "docker",
            "--wheelhouse",
            str(tmp / "wh"),
            "--recipes",
            str(recipes),
            "--cache",
            str(tmp / "cache"),
        ],
    )
    return res.exit_code, res.stdout, res.stderr


def test_recursive_builds_the_missing_compiled_dependency_first(
    engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdists = [
        isadep_sdist(tmp_path / "index"),
        pure_sdist(tmp_path / "index", "usesdep", "1.0", ["isadep>=0.1"], code=USES_CODE),
    ]
    with LocalIndex(sdists) as index:
        monkeypatch.setenv("CBUILD_PYPI_URL", index.url)
        code, out, err = cbuild(tmp_path, "usesdep", "1.0", "--recursive", "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert [s["name"] for s in doc["plan"]] == ["isadep", "usesdep"]
        assert doc["plan"][0]["chain"] == "usesdep -> isadep"
        assert doc["requirements_from"] == "PKG-INFO 2.2"
        assert doc["missing_dependencies"] == [
            {"requirement": "isadep>=0.1", "targets": [TARGET], "needed_by": "usesdep"}
        ]
        # The compiled dependency was built, tested and placed first.
        (dep,) = doc["dependencies"]
        assert (dep["package"], dep["ok"]) == ("isadep", True)
        assert dep["targets"][0]["status"] == "tested"
        assert doc["targets"][0]["status"] == "tested", doc["targets"][0]
        assert err.index("usesdep -> isadep: isadep 0.1.0") < err.index("PyPI: usesdep 1.0")
        wh = tmp_path / "wh"
        assert listing(wh) == [f"generic/{USESDEP}", f"gentoo2023/generic/{ISADEP}"]
        # usesdep's test installed that very wheel, from the wheelhouse.
        runtime = [e for e in doc["lock"] if e["kind"] == "runtime"]
        assert [e["filename"] for e in runtime] == [ISADEP]
        placed = json.loads((wh / f"gentoo2023/generic/{ISADEP}.json").read_text())
        assert runtime[0]["sha256"] == placed["sha256"]
        with zipfile.ZipFile(wh / "generic" / USESDEP) as zf:
            meta = zf.read("usesdep-1.0+computecanada.dist-info/METADATA").decode()
        assert "Requires-Dist: isadep>=0.1" in meta
        # Site-built wheels stay out of the shared wheel store (only the index's go there).
        store = [p.name for p in (tmp_path / "cache/wheels").iterdir()]
        assert not [n for n in store if n.startswith(("isadep-", "usesdep-"))], store

        # Again without --recursive: both held, nothing missing, nothing to build.
        code, out, err = cbuild(tmp_path, "usesdep", "1.0", "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert "warning" not in err and doc["missing_dependencies"] == []
        assert doc["targets"][0]["status"] == "up to date"


def test_requirements_unknown_before_the_build_are_checked_after_it(
    engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PKG-INFO 2.1 without Requires-Dist and dependencies only in setup.py: the package is
    built first; its run fails (no index has its dependency); the built wheel's METADATA names
    the dependency, which is built, and the package is run again."""
    old = write_sdist(
        tmp_path / "index",
        "usesold",
        "1.0",
        {
            "PKG-INFO": pkg_info("usesold", "1.0", "2.1"),
            "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\n'
            'build-backend = "setuptools.build_meta"\n[project]\nname = "usesold"\n'
            'version = "1.0"\ndynamic = ["dependencies"]\n',
            "setup.py": "from setuptools import setup\n\n"
            "setup(install_requires=['cbuildpuredep'])\n",
            "usesold/__init__.py": "import cbuildpuredep\n",
        },
    )
    dep = pure_sdist(tmp_path / "index", "cbuildpuredep", "1.0", [])
    with LocalIndex([old, dep]) as index:
        monkeypatch.setenv("CBUILD_PYPI_URL", index.url)
        code, out, err = cbuild(tmp_path, "usesold", "1.0", "--recursive", "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert not doc["requirements_known_before_build"]
        assert "PKG-INFO 2.1" in doc["requirements_from"]
        assert [s["name"] for s in doc["plan"]] == ["usesold"]  # nothing known to plan
        assert [d["package"] for d in doc["dependencies"]] == ["cbuildpuredep"]
        assert "usesold 1.0 again, with what it needs" in err
        assert listing(tmp_path / "wh") == [
            "generic/cbuildpuredep-1.0+computecanada-py3-none-any.whl",
            "generic/usesold-1.0+computecanada-py3-none-any.whl",
        ]


def test_a_failing_dependency_stops_the_run_with_its_chain(
    engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdists = [
        isadep_sdist(tmp_path / "index", {"src/isafixture/_kernel.c": "#error broken kernel\n"}),
        pure_sdist(tmp_path / "index", "usesdep", "1.0", ["isadep>=0.1"], code=USES_CODE),
    ]
    with LocalIndex(sdists) as index:
        monkeypatch.setenv("CBUILD_PYPI_URL", index.url)
        code, out, err = cbuild(tmp_path, "usesdep", "1.0", "--recursive")
    assert code == 5, err
    assert "error: usesdep -> isadep: build failed: gentoo2023-generic: build-failed" in err
    assert "nothing of usesdep was built" in err
    assert "PyPI: usesdep 1.0" not in err  # the dependent was not even fetched
    assert listing(tmp_path / "wh") == []
