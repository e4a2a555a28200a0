"""The providers as the pipeline and the command line use them: the thin cvmfs image, the step
command of each provider, `--provider auto`, the same target ids and folders for both, and
`cbuild doctor`'s report on the stack (the miniature stack's files stand for a mounted one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli.app import app
from builder.cli.common import pick_targets
from builder.engines.base import Mount
from builder.errors import ConfigError
from builder.providers import choose, get_provider, spec_for
from builder.providers import cvmfs_env as cv
from builder.targets.model import Target, all_targets, load_stack, resolve

STACK = load_stack("gentoo2023")
S = cv.settings(STACK)
FIXTURE = Path(__file__).parent / "fixtures" / "cvmfs"


def target(level: str = "x86-64-v3", provider: str = "cvmfs") -> Target:
    return Target(STACK, level, "cpu", "3.11", provider)


@pytest.fixture
def mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the miniature stack where CBUILD_CVMFS_MOUNT says /cvmfs is."""
    shutil.copytree(FIXTURE / "soft.computecanada.ca", tmp_path / "soft.computecanada.ca")
    monkeypatch.setenv("CBUILD_CVMFS_MOUNT", str(tmp_path))
    return tmp_path


def test_the_cvmfs_image_is_thin_and_otherwise_the_targets() -> None:
    thin, full = spec_for(target()), spec_for(target(provider="standalone"))
    assert thin.packages == ("ca-certificates",)  # the compat layer brings the toolchain
    assert thin.base == full.base and thin.env == full.env and thin.steps == full.steps
    assert dict(thin.labels)["org.cbuild.provider"] == "cvmfs"
    assert dict(full.labels)["org.cbuild.provider"] == "standalone"
    assert thin.hash != full.hash
    # a recipe's system packages (the miniature stack's tests need some) come after, sorted
    extra = spec_for(target(), ("lmod", "build-essential", "ca-certificates"))
    assert extra.packages == ("ca-certificates", "build-essential", "lmod")


def test_step_commands() -> None:
    assert get_provider("standalone").step_command(target(), "echo hi", ("mylib",)) == [
        "sh",
        "-c",
        "echo hi",
    ]
    cmd = get_provider("cvmfs").step_command(target(), "echo hi\n", ("mylib",))
    mods = ("StdEnv/2023", "gcc", "python/3.11", "mylib")
    assert cmd == ["bash", "-c", cv.prologue(S, mods) + "echo hi\n"]
    assert "module load StdEnv/2023 gcc python/3.11 mylib; then" in cmd[2]


def test_binds_environment_and_provenance(mounted: Path) -> None:
    cvmfs, standalone = get_provider("cvmfs"), get_provider("standalone")
    assert cvmfs.binds(target()) == (Mount(mounted, "/cvmfs", True, "rslave"),)
    assert cvmfs.environment(target("x86-64-v4")) == {"FORCE_CC_CVMFS": "1", "RSNT_ARCH": "avx512"}
    assert standalone.binds(target()) == () and standalone.environment(target()) == {}
    assert standalone.provenance(target()) == {} and standalone.failure(target(), "x") is None
    assert cvmfs.provenance(target("generic"), ("mylib",)) == {
        "name": "cvmfs",
        "repository": "/cvmfs/soft.computecanada.ca",
        "revision": None,  # the copy has no CVMFS revision attribute
        "modules": ["StdEnv/2023", "gcc", "python/3.11", "mylib"],
        "environment": {"FORCE_CC_CVMFS": "1", "RSNT_ARCH": "avx2"},  # generic: the baseline's
    }
    assert cvmfs.unavailable(target()) is None
    err = cvmfs.failure(target(), f"{cv.MODULE_FAILED} nosuch/2.0\n")
    assert isinstance(err, ConfigError) and "module nosuch/2.0" in err.message


def test_facts_from_the_stack_data() -> None:
    cvmfs = get_provider("cvmfs")
    assert cvmfs.glibc_floor(STACK) == "2.37" and cvmfs.compiler(STACK) == "gcc 12.3"
    assert [p.version for p in cvmfs.pythons(STACK)] == ["3.11", "3.12", "3.13"]
    assert cvmfs.pythons(STACK)[0].source == "module python/3.11 of /cvmfs/soft.computecanada.ca"


def test_auto_picks_cvmfs_only_where_the_profile_is(
    mounted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert choose("auto") == (
        "cvmfs",
        f"auto: the stack is mounted here ({mounted / 'soft.computecanada.ca'})",
    )
    assert choose("standalone") == ("standalone", "--provider standalone")
    monkeypatch.setenv("CBUILD_CVMFS_MOUNT", str(mounted / "nothing"))
    assert choose("auto") == (
        "standalone",
        "auto: no /cvmfs/soft.computecanada.ca/config/profile/bash.sh here",
    )
    with pytest.raises(ConfigError, match="unknown provider 'nix'"):
        choose("nix")
    err = get_provider("cvmfs").unavailable(target())
    assert err is not None and err.message == (
        "--provider cvmfs: the gentoo2023 stack is not mounted here "
        f"(no {mounted}/nothing/soft.computecanada.ca/config/profile/bash.sh)"
    )


def test_same_target_ids_and_folders_for_both_providers(mounted: Path) -> None:
    both = [all_targets(p) for p in ("standalone", "cvmfs")]
    assert [t.id for t in both[0]] == [t.id for t in both[1]]
    assert [t.folder for t in both[0]] == [t.folder for t in both[1]]
    assert {t.provider for t in both[1]} == {"cvmfs"}
    picked = pick_targets(["gentoo2023-x86-64-v4"], False, "cvmfs")
    assert picked == resolve(["gentoo2023-x86-64-v4"], "cvmfs")
    assert picked[0].folder == "gentoo2023/x86-64-v4" and picked[0].provider == "cvmfs"


def test_doctor_reports_the_stack(mounted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    out = json.loads(runner.invoke(app, ["doctor", "--json"]).stdout)
    assert out["cvmfs"] == [
        {
            "stack": "gentoo2023",
            "repository": "/cvmfs/soft.computecanada.ca",
            "host_path": str(mounted / "soft.computecanada.ca"),
            "profile": "/cvmfs/soft.computecanada.ca/config/profile/bash.sh",
            "mounted": True,
            "revision": None,
        }
    ]
    assert out["provider_auto"] == "cvmfs"
    monkeypatch.setenv("CBUILD_CVMFS_MOUNT", str(mounted / "nothing"))
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 0
    said = " ".join(res.stderr.split())
    assert "cvmfs: stack gentoo2023 (/cvmfs/soft.computecanada.ca): not mounted" in said
    assert "--provider auto picks standalone here" in said


def test_cuda_targets_on_the_stack_get_reproducible_nvcc_flags() -> None:
    from builder.images.cuda import REPRODUCIBLE_NVCC
    from builder.providers import get_provider
    from builder.targets.model import resolve

    cvmfs = get_provider("cvmfs")
    cuda = resolve(["gentoo2023-x86-64-v3-cuda12"])[0]
    cpu = resolve(["gentoo2023-x86-64-v3"])[0]
    assert cvmfs.environment(cuda)["NVCC_APPEND_FLAGS"] == " ".join(REPRODUCIBLE_NVCC)
    assert "NVCC_APPEND_FLAGS" not in cvmfs.environment(cpu)
