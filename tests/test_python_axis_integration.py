"""The Python axis with the real engine: the C-extension fixture built for Python 3.13 (CPython
from source, in the layer every level shares) gets cp313 tags and is imported in a fresh 3.13
venv under QEMU with exactly x86-64-v3; a pure wheel is built once and tested on 3.11 and 3.13;
an abi3 wheel is built once on 3.11 and tested on 3.13; `cbuild run --python 3.13` opens 3.13.
The first run builds the 3.13 layer (minutes, once per machine: then cached)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli.app import app
from builder.engines.base import RunSpec
from builder.pipeline.job import Pipeline
from builder.pipeline.model import WheelRequest
from builder.providers import spec_for
from builder.targets.cputest import plan_here
from builder.targets.levels import level
from builder.targets.model import resolve
from tests.conftest import FIXTURE_RECIPE, make_sdist

pytestmark = pytest.mark.integration

V3 = resolve(["gentoo2023-x86-64-v3"], pythons=("3.11", "3.13"))  # -v3 and -v3-py313


def _sdist(tmp: Path, name: str, files: dict[str, str]) -> Path:
    out = tmp / f"{name}-1.0.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for rel, text in files.items():
            info = tarfile.TarInfo(f"{name}-1.0/{rel}")
            info.size, info.mtime = len(text), 1_700_000_000
            tar.addfile(info, io.BytesIO(text.encode()))
    return out


def _run(engine, package, sdist, tmp, cache, targets, recipes=None):
    req = WheelRequest(
        package,
        "0.1.0" if package == "isafixture" else "1.0",
        tuple(targets),
        tmp / "wh",
        cache,
        recipes or tmp,
        sdist=sdist,
        jobs=2,
    )
    return Pipeline(engine, lambda t, m: None).run(req)


def test_c_extension_for_313_imported_under_exact_v3(engine, tmp_path) -> None:
    py313 = V3[1]
    image = engine.build_image(spec_for(py313), lambda m: None)
    res = engine.run(
        RunSpec(
            image=image,
            command=[
                "python3",
                "-c",
                "import sys, ssl, sqlite3, ctypes, lzma, bz2, venv; print(sys.version)",
            ],
        ),
        tmp_path / "probe.log",
    )
    assert res.ok and res.output.strip().startswith("3.13.5"), res.output
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "isafixture.toml").write_text(FIXTURE_RECIPE.read_text())
    report = _run(
        engine, "isafixture", make_sdist(tmp_path / "s"), tmp_path, tmp_path / "c", [py313], recipes
    )
    assert report.ok, report.error
    (r,) = report.results
    assert r.wheel.name == "isafixture-0.1.0+computecanada-cp313-cp313-linux_x86_64.whl"
    assert plan_here(level("x86-64-v3")).mode == "qemu"  # this host can emulate exactly v3
    assert r.status == "tested", r.test_detail
    assert r.test_detail.startswith("passed on Python 3.13 under QEMU, exactly x86-64-v3")
    assert "Python 3.13" in r.test_how
    assert (tmp_path / "wh/gentoo2023/x86-64-v3" / r.wheel.name).is_file()


def test_pure_built_once_tested_on_each_python(engine, tmp_path) -> None:
    sdist = _sdist(
        tmp_path,
        "purepy",
        {
            "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\n'
            'build-backend = "setuptools.build_meta"\n[project]\nname = "purepy"\n'
            'version = "1.0"\n',
            "purepy/__init__.py": "import sys\nPY = sys.version_info[:2]\n",
        },
    )
    report = _run(engine, "purepy", sdist, tmp_path, tmp_path / "c", list(reversed(V3)))
    assert report.ok, report.error
    by_py = {r.target.python: r for r in report.results}
    assert {r.wheel.name for r in report.results} == {"purepy-1.0+computecanada-py3-none-any.whl"}
    assert by_py["3.11"].seconds.get("build") and by_py["3.13"].seconds.get("build") is None
    assert by_py["3.13"].built_on == "gentoo2023-x86-64-v3"  # the 3.11 target built it
    assert all(r.status == "tested" for r in report.results)
    assert "Python 3.13" in by_py["3.13"].test_detail and "3.11" in by_py["3.11"].test_detail


ABI3_SETUP = """\
from setuptools import Extension, setup
setup(
    name="limited", version="1.0", packages=["limited"],
    ext_modules=[Extension("limited._c", ["limited/_c.c"], py_limited_api=True,
                           define_macros=[("Py_LIMITED_API", "0x030B0000")])],
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
"""
ABI3_C = """\
#include <Python.h>
static PyObject *two(PyObject *self, PyObject *args) { return PyLong_FromLong(2); }
static PyMethodDef methods[] = {{"two", two, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_c", NULL, -1, methods};
PyMODINIT_FUNC PyInit__c(void) { return PyModule_Create(&mod); }
"""


def test_abi3_built_once_on_the_oldest_python_tested_on_newer(engine, tmp_path) -> None:
    sdist = _sdist(
        tmp_path,
        "limited",
        {
            "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61", "wheel"]\n'
            'build-backend = "setuptools.build_meta"\n',
            "setup.py": ABI3_SETUP,
            "limited/__init__.py": "from limited._c import two\n",
            "limited/_c.c": ABI3_C,
        },
    )
    report = _run(engine, "limited", sdist, tmp_path, tmp_path / "c", list(V3))
    assert report.ok, report.error
    by_py = {r.target.python: r for r in report.results}
    name = "limited-1.0+computecanada-cp311-abi3-linux_x86_64.whl"
    assert by_py["3.11"].wheel.name == by_py["3.13"].wheel.name == name
    assert by_py["3.13"].seconds.get("build") is None
    assert by_py["3.13"].built_on == "gentoo2023-x86-64-v3"  # the 3.11 target built it
    assert by_py["3.13"].status == "tested", by_py["3.13"].test_detail
    assert "Python 3.13" in by_py["3.13"].test_detail


def test_cbuild_run_python_313_opens_that_interpreter(engine, tmp_path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "run",
            "gentoo2023-x86-64-v3",
            "--python",
            "3.13",
            "--engine",
            "docker",
            "--cache",
            str(tmp_path),
            "--",
            "python",
            "-c",
            "import sys; print('py', *sys.version_info[:2])",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "py 3 13" in result.output
