"""`cbuild wheel --provider cvmfs` end to end on the miniature stack, with Podman and Apptainer.

A real C extension (tests/fixtures/cvmfs/myext) whose recipe needs the `mylib` module to build
and the `mydata` module at run time is built, tested and placed through the command line: the
stack bound at /cvmfs (a copy, with its revision attribute set), RSNT_ARCH per level, the
modules loaded by the stack's Lmod, the same target ids and wheelhouse folders as standalone.
This proves the mechanism, not the real stack's ABI; the last test runs on the real stack where
a host has it mounted.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from builder.providers import cvmfs_env as cv
from builder.targets.model import load_stack
from tests.conftest import make_sdist
from tests.test_apptainer_integration import apptainer, apptainer_env  # noqa: F401 - fixtures
from tests.test_cvmfs_integration import FIXTURE, host_mount, image  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parent.parent
S = cv.settings(load_stack("gentoo2023"))
RECIPES = FIXTURE / "recipes"
WHEEL = "cvmfsext-0.1.0+computecanada-cp311-cp311-linux_x86_64.whl"
TARGETS = ("gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4")
REVISION = "13372"


def sdist(dest: Path) -> Path:
    """cvmfsext-0.1.0.tar.gz: the package folder and mylib's myext.c, fixed mtimes."""
    files = {p.name: p.read_bytes() for p in sorted((FIXTURE / "myext").iterdir())}
    files["myext.c"] = (FIXTURE / "mylib" / "myext.c").read_bytes()
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "cvmfsext-0.1.0.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"cvmfsext-0.1.0/{name}")
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out


@pytest.fixture(scope="module")
def stack(host_mount: Path) -> Path:  # noqa: F811 - the fixture imported above
    """The miniature stack's copy with CVMFS's revision attribute on its repository root."""
    os.setxattr(S.host_repository(host_mount), S.revision_xattr, REVISION.encode())
    return host_mount


def cbuild(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=1800,
    )


def wheel_args(tmp: Path, *extra: str) -> list[str]:
    return [
        "wheel",
        "cvmfsext",
        "0.1.0",
        "--provider",
        "cvmfs",
        *(a for t in TARGETS for a in ("--target", t)),
        "--sdist",
        str(sdist(tmp / "sdist")),
        "--recipes",
        str(RECIPES),
        "--wheelhouse",
        str(tmp / "wheelhouse"),
        "--cache",
        str(tmp / "cache"),
        "--json",
        *extra,
    ]


def check_run(proc: subprocess.CompletedProcess, tmp: Path) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "provider cvmfs (--provider cvmfs)" in proc.stderr
    results = {r["target"]: r for r in json.loads(proc.stdout)["targets"]}
    # v3 is tested on its exact level (QEMU or natively); v4 runs only on an AVX-512 host
    assert results[TARGETS[0]]["status"] == "tested", results
    assert results[TARGETS[1]]["status"] in ("tested", "not-tested"), results
    wheelhouse = tmp / "wheelhouse"
    for tid, folder in zip(TARGETS, ("gentoo2023/x86-64-v3", "gentoo2023/x86-64-v4"), strict=True):
        wheel = wheelhouse / folder / WHEEL  # the standalone provider's folders
        assert wheel.is_file(), sorted(map(str, wheelhouse.rglob("*")))
        manifest = json.loads(wheel.with_name(WHEEL + ".json").read_text())
        assert manifest["provider"] == "cvmfs"
        assert manifest["target"]["id"] == tid and manifest["target"]["provider"] == "cvmfs"
        level = tid.removeprefix("gentoo2023-")
        assert manifest["build"]["provider"] == {
            "name": "cvmfs",
            "repository": "/cvmfs/soft.computecanada.ca",
            "revision": REVISION,
            "modules": ["StdEnv/2023", "gcc", "python/3.11", "mylib", "mydata"],
            "environment": {
                "FORCE_CC_CVMFS": "1",
                "RSNT_ARCH": {"x86-64-v3": "avx2", "x86-64-v4": "avx512"}[level],
            },
        }
        assert (
            manifest["build"]["env"]["RSNT_ARCH"]
            == manifest["build"]["provider"]["environment"]["RSNT_ARCH"]
        )
        # linked against the level folder's mylib that RSNT_ARCH selected, by RPATH
        with zipfile.ZipFile(wheel) as zf:
            so = next(n for n in zf.namelist() if n.endswith(".so"))
            data = zf.read(so)
        assert f"easybuild/software/2023/{level}/Core/mylib/1.0/lib".encode() in data


def test_wheel_through_the_cvmfs_provider_with_podman(engine, stack, tmp_path) -> None:
    proc = cbuild(
        tmp_path,
        *wheel_args(tmp_path, "--engine", "docker"),
        env={"CBUILD_CVMFS_MOUNT": str(stack)},
    )
    check_run(proc, tmp_path)


def test_a_missing_module_names_the_module_and_the_stack(engine, stack, tmp_path) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    text = (RECIPES / "cvmfsext.toml").read_text()
    (recipes / "cvmfsext.toml").write_text(
        text.replace('modules = ["mylib"]', 'modules = ["mylib", "nosuch/2.0"]')
    )
    args = wheel_args(tmp_path, "--engine", "docker")
    args[args.index("--recipes") + 1] = str(recipes)
    proc = cbuild(tmp_path, *args, env={"CBUILD_CVMFS_MOUNT": str(stack)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    said = " ".join(proc.stderr.split())
    assert (
        "module nosuch/2.0 could not be loaded from the gentoo2023 stack at "
        "/cvmfs/soft.computecanada.ca (RSNT_ARCH=" in said
    ), proc.stderr
    assert "fix: check the recipe's modules/runtime_modules" in said
    assert not (tmp_path / "wheelhouse" / "gentoo2023").exists()


def test_wheel_through_the_cvmfs_provider_with_apptainer(request, stack, tmp_path) -> None:
    request.getfixturevalue("apptainer")  # started (the harness where none is installed)
    env = {**request.getfixturevalue("apptainer_env"), "CBUILD_CVMFS_MOUNT": str(stack)}
    proc = cbuild(tmp_path, *wheel_args(tmp_path, "--engine", "apptainer"), env=env)
    check_run(proc, tmp_path)


REAL = Path(S.repository) / S.profile


@pytest.mark.host_dependent
@pytest.mark.skipif(not REAL.is_file(), reason=f"no {REAL} here: the real stack is not mounted")
def test_the_real_stack_builds_the_isa_fixture(engine, tmp_path) -> None:
    """On a host with /cvmfs/soft.computecanada.ca (a cluster node, the opt-in CI job): the
    real profile, Lmod and modules, and a revision read from CVMFS itself."""
    fixture_recipes = REPO / "tests" / "fixtures" / "recipes"
    proc = cbuild(
        tmp_path,
        "wheel",
        "isafixture",
        "0.1.0",
        "--provider",
        "auto",
        "--target",
        "gentoo2023-x86-64-v3",
        "--sdist",
        str(make_sdist(tmp_path / "sdist")),
        "--recipes",
        str(fixture_recipes),
        "--wheelhouse",
        str(tmp_path / "wheelhouse"),
        "--cache",
        str(tmp_path / "cache"),
        env={"CBUILD_CVMFS_MOUNT": ""},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "provider cvmfs (auto: the stack is mounted here" in proc.stderr
    wheel = next((tmp_path / "wheelhouse" / "gentoo2023" / "x86-64-v3").glob("*.whl"))
    manifest = json.loads(wheel.with_name(wheel.name + ".json").read_text())
    assert manifest["provider"] == "cvmfs"
    assert manifest["build"]["provider"]["revision"].isdigit()
    assert manifest["build"]["gcc"].startswith("gcc (Gentoo")  # the compat layer's compiler
