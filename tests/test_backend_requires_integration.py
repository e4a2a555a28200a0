"""Build requirements as the backend asks for them (issue 10, point 3b), end to end: a real
scikit-build-core package from PyPI, deflate 0.9.0 (pure C, libdeflate bundled, `cmake.version
= ">=3.26"`). Its `[build-system] requires` names only scikit-build-core; asked at fetch time,
the backend adds cmake and ninja (the image has neither), which are fetched, locked with their
sha256, and the build runs offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.pipeline.job import Pipeline
from builder.pipeline.model import Status, WheelRequest
from builder.targets.model import resolve

pytestmark = [pytest.mark.integration, pytest.mark.network]


def test_scikit_build_core_package_builds_offline(engine, tmp_path: Path) -> None:
    recipes = tmp_path / "no-recipes"
    recipes.mkdir()
    messages: list[str] = []
    req = WheelRequest(
        "deflate",
        "0.9.0",
        tuple(resolve(["gentoo2023-x86-64-v3"])),
        tmp_path / "wh",
        tmp_path / "cache",
        recipes,
    )
    report = Pipeline(engine, lambda t, m: messages.append(m)).run(req)
    assert report.ok, report.error
    r = report.results[0]
    assert r.status is Status.TESTED, r.test_detail
    build = {e["name"]: e for e in report.lock if e["kind"] == "build"}
    for name in ("cmake", "ninja", "scikit-build-core"):
        assert name in build, sorted(build)
        assert len(build[name]["sha256"]) == 64
    assert any(m.startswith("the backend asks for") and "cmake" in m for m in messages)
    # The build itself ran with the network off and found the fetched cmake.
    log = r.build_log.read_text()
    assert "cmake" in log.lower()
