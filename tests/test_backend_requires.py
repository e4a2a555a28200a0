"""The fetch step's backend query: its script and the answer it prints (the real run:
tests/test_backend_requires_integration.py)."""

from __future__ import annotations

import shlex
import subprocess

from builder.images import scripts as steps
from builder.pipeline.backend import _answer


def test_script_is_valid_shell_and_python() -> None:
    s = steps.backend_requires_script(
        "x-1.tar.gz", "x-1", ["scikit-build-core>=0.9"], patches=("a.patch",), pre_build=("true",)
    )
    assert subprocess.run(["sh", "-n", "-c", s]).returncode == 0
    compile(steps._BACKEND_PROBE, "probe", "exec")
    assert steps.BUILD_FRONTEND in s and "get_requires_for_build" in s
    # The build's own venv and prepared source, as the build makes them.
    assert "/cbuild/buildenv/bin/python" in s and "patch -p1" in s
    assert "--no-index -r" not in s
    offline = steps.backend_requires_script("x-1.tar.gz", "x-1", ["setuptools"], offline=True)
    assert "--no-index -r" in offline


def test_answer_is_the_marked_line() -> None:
    out = (
        "noise\n" + steps.BACKEND_MARK + '{"asked": ["cmake>=3.26"], "missing": ["cmake>=3.26"]}\n'
    )
    assert _answer(out) == {"asked": ["cmake>=3.26"], "missing": ["cmake>=3.26"]}
    assert _answer("no answer") is None
    assert shlex.quote(steps.BUILD_FRONTEND) == steps.BUILD_FRONTEND
