"""Shared fixtures: a real engine (Podman or Docker through the Docker API) and sdists of the
C-extension fixture package, including broken variants for the bad-input tests."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURE_SRC = Path(__file__).parent / "fixtures" / "isafixture"
FIXTURE_RECIPE = Path(__file__).parent / "fixtures" / "recipes" / "isafixture.toml"
FIXTURE_MTIME = 1_700_000_000


def make_sdist(dest: Path, edits: dict[str, str] | None = None, version: str = "0.1.0") -> Path:
    """A `isafixture-VERSION.tar.gz` of the fixture's source, with files replaced by `edits`
    (relative path -> new text) and fixed mtimes, as a real sdist would have."""
    top = f"isafixture-{version}"
    files = {
        p.relative_to(FIXTURE_SRC).as_posix(): p.read_bytes()
        for p in sorted(FIXTURE_SRC.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    for rel, text in (edits or {}).items():
        files[rel] = text.encode()
    if version != "0.1.0":
        files["pyproject.toml"] = files["pyproject.toml"].replace(
            b'version = "0.1.0"', f'version = "{version}"'.encode()
        )
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{top}.tar.gz"
    # Same content, same bytes (the gzip header's time too): a build key hashes the file.
    with (
        gzip.GzipFile(out, "wb", mtime=FIXTURE_MTIME) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for rel, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size, info.mtime, info.mode = len(data), FIXTURE_MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out


# CI (CBUILD_NO_SKIPS=1) fails a run with any skip but those of `host_dependent` tests, whose
# reason is a fact of the host (no AVX-512 here, no /cvmfs): a skip must never pass as a test.
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "host_dependent" not in report.keywords:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CBUILD_NO_SKIPS") == "1" and _SKIPPED and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's reporter
    if os.environ.get("CBUILD_NO_SKIPS") == "1" and _SKIPPED:
        terminalreporter.write_line(
            f"CBUILD_NO_SKIPS=1: {len(_SKIPPED)} test(s) skipped, which CI does not allow:",
            red=True,
        )
        for line in _SKIPPED:
            terminalreporter.write_line(f"  {line}")


@pytest.fixture(scope="session")
def engine():
    """The real engine. Skipped with the reason where none runs, except where CI demands one
    (CBUILD_REQUIRE_ENGINE=1): there a missing engine is a failure, never a skip."""
    from builder.engines.docker import DockerEngine
    from builder.errors import EngineError

    try:
        return DockerEngine()
    except EngineError as exc:
        if os.environ.get("CBUILD_REQUIRE_ENGINE") == "1":
            pytest.fail(f"CBUILD_REQUIRE_ENGINE=1 but {exc}")
        pytest.skip(f"no container engine: {exc.message} (run ci/setup.sh)")


@pytest.fixture
def sdist_factory(tmp_path: Path) -> Callable[..., Path]:
    return lambda edits=None, version="0.1.0": make_sdist(tmp_path / "sdist", edits, version)
