"""The cvmfs provider's step environment, rendered from the stack data: golden prologue,
environment and binds; the prologue's failure markers; the stack's revision; the miniature
stack's files (tests/fixtures/cvmfs), which the integration test runs for real."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import pytest

from builder.engines.base import Mount
from builder.errors import ConfigError
from builder.providers import cvmfs_env as cv
from builder.targets.model import Target, load_stack

STACK = load_stack("gentoo2023")
S = cv.settings(STACK)
FIXTURE = Path(__file__).parent / "fixtures" / "cvmfs"


def target(level: str = "x86-64-v3", acc: str = "cpu", python: str = "3.11") -> Target:
    return Target(STACK, level, acc, python, "cvmfs")


# --- settings ---------------------------------------------------------------------------------
def test_settings_from_the_stack_file() -> None:
    assert S.mount == "/cvmfs"
    assert S.repository == "/cvmfs/soft.computecanada.ca"
    assert S.profile_path == "/cvmfs/soft.computecanada.ca/config/profile/bash.sh"
    assert S.host_repository() == Path("/cvmfs/soft.computecanada.ca")
    assert S.host_repository(Path("/tmp/x")) == Path("/tmp/x/soft.computecanada.ca")


def test_settings_name_a_missing_key_and_a_missing_table() -> None:
    table = dict(STACK.providers["cvmfs"])
    del table["arch_values"]
    broken = dataclasses.replace(STACK, providers={"cvmfs": table})
    with pytest.raises(ConfigError, match="'arch_values' missing"):
        cv.settings(broken)
    with pytest.raises(ConfigError, match=r"no \[providers.cvmfs\] of stack 'gentoo2023'"):
        cv.settings(dataclasses.replace(STACK, providers={}))
    outside = dict(STACK.providers["cvmfs"], repository="/opt/stack")
    with pytest.raises(ConfigError, match="not under mount"):
        cv.settings(dataclasses.replace(STACK, providers={"cvmfs": outside}))


# --- environment ------------------------------------------------------------------------------
def test_environment_per_level_and_accelerator() -> None:
    assert cv.environment(target("generic"), S) == {"FORCE_CC_CVMFS": "1", "RSNT_ARCH": "avx2"}
    assert cv.environment(target("x86-64-v3"), S) == {"FORCE_CC_CVMFS": "1", "RSNT_ARCH": "avx2"}
    assert cv.environment(target("x86-64-v4"), S) == {
        "FORCE_CC_CVMFS": "1",
        "RSNT_ARCH": "avx512",
    }
    assert cv.environment(target("x86-64-v4", "cuda12"), S) == {
        "FORCE_CC_CVMFS": "1",
        "RSNT_ARCH": "avx512",
        "RSNT_CUDA_DRIVER_VERSION": "580.65.06",
    }


def test_a_level_the_stack_does_not_name_is_a_clear_error() -> None:
    table = dict(STACK.providers["cvmfs"], arch_values={"x86-64-v3": "avx2"})
    s = cv.settings(dataclasses.replace(STACK, providers={"cvmfs": table}))
    with pytest.raises(ConfigError, match="names no RSNT_ARCH for CPU level 'x86-64-v4'"):
        cv.environment(target("x86-64-v4"), s)
    with pytest.raises(ConfigError, match="not cpu or cudaNN"):
        cv.environment(target("x86-64-v3", "rocm6"), S)


# --- modules ----------------------------------------------------------------------------------
def test_step_modules_build_and_test() -> None:
    t = target("x86-64-v3", "cuda12", "3.12")
    base = ("StdEnv/2023", "gcc", "python/3.12", "cuda/12")
    assert cv.step_modules(target(), S) == ("StdEnv/2023", "gcc", "python/3.11")
    assert cv.step_modules(t, S, ["fftw", "gcc"], ["hdf5"]) == (*base, "fftw", "hdf5")
    assert cv.step_modules(t, S, ["fftw"], ["hdf5", "fftw"], step="test") == (*base, "hdf5", "fftw")


GOLDEN_PROLOGUE = """\
echo '::cbuild-step:: modules'
if [ ! -r /cvmfs/soft.computecanada.ca/config/profile/bash.sh ]; then
    echo '::cbuild-stack-missing:: /cvmfs/soft.computecanada.ca/config/profile/bash.sh'; exit 1
fi
source /cvmfs/soft.computecanada.ca/config/profile/bash.sh
if ! type module >/dev/null 2>&1; then
    echo '::cbuild-stack-missing:: module'; exit 1
fi
if ! module load StdEnv/2023 gcc python/3.11 'my lib/1.0'; then
    for m in StdEnv/2023 gcc python/3.11 'my lib/1.0'; do
        module load "$m" || { echo "::cbuild-module-failed:: $m"; exit 1; }
    done
    echo '::cbuild-module-failed:: StdEnv/2023 gcc python/3.11 my lib/1.0'; exit 1
fi
module --terse list 2>&1
"""


def test_prologue_golden() -> None:
    mods = cv.step_modules(target(), S, ["my lib/1.0"])  # a space: quoted, never split
    assert cv.prologue(S, mods) == GOLDEN_PROLOGUE


def test_command_runs_the_prologue_then_the_script_in_bash() -> None:
    pro = cv.prologue(S, ("StdEnv/2023",))
    assert cv.command(pro, "set -e\necho hi\n", "arg") == [
        "bash",
        "-c",
        pro + "set -e\necho hi\n",
        "arg",
    ]


# --- failures ---------------------------------------------------------------------------------
def test_failure_names_the_module_and_the_stack() -> None:
    out = "::cbuild-step:: modules\nLmod has detected the following error: ...\n"
    err = cv.failure(out + "::cbuild-module-failed:: mylib/2.0\n", target("x86-64-v4"), S)
    assert isinstance(err, ConfigError)
    assert err.message == (
        "module mylib/2.0 could not be loaded from the gentoo2023 stack at "
        "/cvmfs/soft.computecanada.ca (RSNT_ARCH=avx512, target gentoo2023-x86-64-v4)"
    )
    assert "module spider mylib/2.0" in (err.fix or "")
    assert cv.failure(out + "StdEnv/2023\nbuilding...\n", target(), S) is None


def test_failure_of_the_stack_itself() -> None:
    missing = cv.failure(
        "::cbuild-stack-missing:: /cvmfs/soft.computecanada.ca/config/profile/bash.sh\n",
        target(),
        S,
    )
    assert missing is not None
    assert "is not usable: no profile (/cvmfs/soft.computecanada.ca/config/profile/bash.sh)" in (
        missing.message
    )
    assert "--provider standalone" in (missing.fix or "")
    no_lmod = cv.failure("::cbuild-stack-missing:: module\n", target(), S)
    assert no_lmod is not None and "no `module` command after its profile" in no_lmod.message


# --- binds and revision -----------------------------------------------------------------------
def test_binds_golden() -> None:
    assert cv.binds(S) == (Mount(Path("/cvmfs"), "/cvmfs", True, "rslave"),)
    assert cv.binds(S, Path("/tmp/mini")) == (Mount(Path("/tmp/mini"), "/cvmfs", True, "rslave"),)
    assert [m.mode for m in cv.binds(S)] == ["ro,rslave"]  # the Docker API's bind mode
    assert Mount(Path("/x"), "/y").mode == "ro" and Mount(Path("/x"), "/y", False).mode == "rw"


def test_available_and_revision(tmp_path: Path) -> None:
    repo = tmp_path / "soft.computecanada.ca"
    assert not cv.available(S, tmp_path)
    assert cv.revision(S, tmp_path) is None  # not mounted
    (repo / "config" / "profile").mkdir(parents=True)
    (repo / "config" / "profile" / "bash.sh").write_text("")
    assert cv.available(S, tmp_path)
    assert cv.revision(S, tmp_path) is None  # no attribute: not CVMFS
    try:
        os.setxattr(repo, "user.revision", b"13372\n")
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        return  # no user attributes on this file system: the None answers above were the test
    assert cv.revision(S, tmp_path) == "13372"


# --- the miniature stack ----------------------------------------------------------------------
def test_miniature_stack_is_shaped_like_the_data() -> None:
    repo = FIXTURE / "soft.computecanada.ca"
    assert (repo / S.profile).is_file()
    profile = (repo / S.profile).read_text()
    assert "$UID -ge 1000" in profile and "FORCE_CC_CVMFS -eq 1" in profile
    modules = repo / "easybuild" / "modules" / "2023"
    # one mylib modulefile per level folder, the same text: the folder alone picks the build
    v3, v4 = (modules / lv / "Core" / "mylib" / "1.0.lua" for lv in ("x86-64-v3", "x86-64-v4"))
    assert v3.read_text() == v4.read_text()
    stdenv = (repo / "custom" / "modules" / "StdEnv" / "2023.lua").read_text()
    for level, value in S.arch_values:
        assert f'{value} = "{level}"' in stdenv
    python = repo / "easybuild/software/2023/Core/python/3.11/bin/python3"
    assert python.is_symlink() and os.readlink(python) == "/usr/bin/python3.11"
