"""The recipe parts of the build script, run by a real shell with the host's GNU patch: patches
in order, the rejected hunk of one that does not apply, commands sharing the build's shell."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from builder.images import scripts as steps
from builder.images.paths import PATCHES_DIR

PATCH = Path(__file__).parent / "fixtures" / "legacy" / "patches" / "isafixture-note.patch"
FIXTURE = Path(__file__).parent / "fixtures" / "isafixture"

pytestmark = pytest.mark.skipif(not shutil.which("patch"), reason="GNU patch is not installed")


def recipe_part(tmp: Path, **kw) -> subprocess.CompletedProcess[str]:
    """The lines build_script adds for a recipe, run in a copy of the fixture's source."""
    script = steps.build_script("x.tar.gz", "x", [], **kw)
    lines = script.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("cd "))
    end = next(i for i, ln in enumerate(lines) if "export CFLAGS=" in ln)
    src = tmp / "src"
    shutil.copytree(FIXTURE, src)
    body = "\n".join(["set -e", *lines[start + 1 : end], 'echo "env: $NOTE_ENV in $(pwd)"'])
    body = body.replace(PATCHES_DIR, str(tmp / "patches"))
    return subprocess.run(["sh", "-c", body], cwd=src, capture_output=True, text=True)


def test_patches_then_commands_in_one_shell(tmp_path: Path) -> None:
    (tmp_path / "patches").mkdir()
    shutil.copy(PATCH, tmp_path / "patches")
    res = recipe_part(
        tmp_path,
        patches=("isafixture-note.patch",),
        pre_build=("export NOTE_ENV=v$VERSION", "cd src"),
        version="0.1.0",
    )
    assert res.returncode == 0, res.stderr
    assert 'NOTE = "patched"' in (tmp_path / "src/src/isafixture/__init__.py").read_text()
    assert f"env: v0.1.0 in {tmp_path / 'src/src'}" in res.stdout
    assert steps.patch_failure(res.stdout) is None


def test_a_rejected_hunk_is_shown(tmp_path: Path) -> None:
    (tmp_path / "patches").mkdir()
    stale = PATCH.read_text().replace(' __version__ = "0.1.0"', ' __version__ = "0.0.9"')
    (tmp_path / "patches" / "stale.patch").write_text(stale)
    res = recipe_part(tmp_path, patches=("stale.patch",))
    assert res.returncode == 1
    detail = steps.patch_failure(res.stdout)
    assert detail is not None and detail.startswith("patch stale.patch does not apply;")
    assert '    +NOTE = "patched"' in detail.splitlines()


def test_no_recipe_parts_leave_the_script_as_it_was() -> None:
    # Recipes without patches or commands must keep their build keys' script bytes.
    plain = steps.build_script("x.tar.gz", "x", ["setuptools"], ("-Ca=b",))
    assert "VERSION=" not in plain and "patch" not in plain and "WHEEL=" not in plain
