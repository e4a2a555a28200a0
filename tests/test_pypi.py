"""builder.sources.pypi:
release facts and downloads against the real PyPI (marked `network`), sdist facts,
safe extraction and lock files against real and crafted archives."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from builder.errors import BuildError, ConfigError, FetchError
from builder.sources import pypi
from builder.sources.pypi import (
    LEGACY_BACKEND,
    LEGACY_REQUIRES,
    Lock,
    LockEntry,
    download,
    lock_entries_from_dir,
    release_info,
    safe_extract,
    sdist_facts,
)

BIOPYTHON_SHA256 = "5dafab74059de4e78f49f6b5684eddae6e7ce46f09cfa059c1d1339e8b1ea0a6"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pypi, "BACKOFF_S", 0)


@pytest.fixture(scope="session")
def biopython_sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    release = release_info("biopython", "1.85")
    return download(release.sdist_url, release.sdist_sha256, tmp_path_factory.mktemp("sdists"))


# --- release_info -----------------------------------------------------------------------------


@pytest.mark.network
def test_release_info_biopython() -> None:
    r = release_info("biopython", "1.85")
    assert r.name == "biopython"
    assert r.version == "1.85"
    assert r.sdist_filename == "biopython-1.85.tar.gz"
    assert r.sdist_url.startswith("https://") and r.sdist_url.endswith("/biopython-1.85.tar.gz")
    assert r.sdist_sha256 == BIOPYTHON_SHA256
    assert r.requires_python == ">=3.9"
    assert r.upload_time.date() == datetime(2025, 1, 15, tzinfo=UTC).date()
    assert r.upload_time.tzinfo is not None


@pytest.mark.network
def test_release_info_reports_pypi_spelling_and_pep440_equal_version() -> None:
    r = release_info("pyyaml", "6.0.1.0")
    assert r.name == "PyYAML"
    assert r.version == "6.0.1"
    assert r.sdist_filename.endswith(".tar.gz")


@pytest.mark.network
def test_unknown_package() -> None:
    with pytest.raises(FetchError) as exc:
        release_info("biopythonx", "1.85")
    assert exc.value.message == "no package named 'biopythonx' on PyPI"
    assert "spelling" in (exc.value.fix or "")


@pytest.mark.network
def test_unknown_version_names_latest_and_nearest() -> None:
    with pytest.raises(FetchError) as exc:
        release_info("biopython", "9.9")
    assert exc.value.message.startswith("no version 9.9 of biopython on PyPI; latest is ")
    assert "\n" not in exc.value.message
    # 9.9 sorts after every release, so the nearest ones are the newest, 1.85 among them.
    assert "1.85" in (exc.value.fix or "")


@pytest.mark.network
def test_version_without_sdist_lists_files_and_suggests_repackaging() -> None:
    # NVIDIA publishes its CUDA runtime as wheels only.
    with pytest.raises(FetchError) as exc:
        release_info("nvidia-cuda-runtime-cu12", "12.8.90")
    assert "has no sdist on PyPI" in exc.value.message
    assert ".whl" in exc.value.message
    assert "repackage" in (exc.value.fix or "")


def test_network_down_after_retries(monkeypatch: pytest.MonkeyPatch, no_backoff: None) -> None:
    monkeypatch.setenv("CBUILD_PYPI_URL", UNREACHABLE)
    with pytest.raises(FetchError) as exc:
        release_info("biopython", "1.85")
    assert exc.value.message.startswith(
        f"could not reach PyPI at {UNREACHABLE}/pypi/biopython/1.85/json after {pypi.TRIES} tries:"
    )


def test_404_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error

    assert not pypi._is_transient(urllib.error.HTTPError("u", 404, "Not Found", {}, None))  # type: ignore[arg-type]
    assert pypi._is_transient(urllib.error.HTTPError("u", 503, "Unavailable", {}, None))  # type: ignore[arg-type]
    assert pypi._is_transient(urllib.error.HTTPError("u", 429, "Too Many", {}, None))  # type: ignore[arg-type]
    assert pypi._is_transient(urllib.error.URLError("refused"))


# --- download ---------------------------------------------------------------------------------


@pytest.mark.network
def test_download_then_cache_hit_without_network(biopython_sdist: Path, no_backoff: None) -> None:
    assert biopython_sdist.name == "biopython-1.85.tar.gz"
    assert pypi.sha256_of(biopython_sdist) == BIOPYTHON_SHA256
    assert not list(biopython_sdist.parent.glob(".*.part"))
    # Nothing listens at this URL: a second download that touched the network would fail.
    again = download(
        f"{UNREACHABLE}/x/biopython-1.85.tar.gz", BIOPYTHON_SHA256.upper(), biopython_sdist.parent
    )
    assert again == biopython_sdist


def test_cache_with_wrong_content_is_fetched_again(tmp_path: Path, no_backoff: None) -> None:
    (tmp_path / "biopython-1.85.tar.gz").write_bytes(b"truncated")
    with pytest.raises(FetchError, match="could not download .* after 4 tries"):
        download(f"{UNREACHABLE}/biopython-1.85.tar.gz", BIOPYTHON_SHA256, tmp_path)


@pytest.mark.network
def test_sha256_mismatch_names_both_and_leaves_nothing(tmp_path: Path) -> None:
    release = release_info("six", "1.16.0")
    wrong = "0" * 64
    with pytest.raises(FetchError) as exc:
        download(release.sdist_url, wrong, tmp_path)
    assert f"expected {wrong}, got {release.sdist_sha256}" in exc.value.message
    assert list(tmp_path.iterdir()) == []


# --- sdist facts and extraction ---------------------------------------------------------------


@pytest.mark.network
def test_sdist_facts_biopython(biopython_sdist: Path) -> None:
    facts = sdist_facts(biopython_sdist)
    assert facts.top_folder == "biopython-1.85"
    # 1.85 has setup.py and no pyproject.toml: the PEP 517 legacy fallback applies.
    assert not facts.has_pyproject
    assert facts.build_requires == LEGACY_REQUIRES == ("setuptools>=40.8.0", "wheel")
    assert facts.build_backend == LEGACY_BACKEND
    # setup.cfg, 2025-01-15 14:51:24.898 UTC (`tar tvzf --full-time`), the newest member.
    assert facts.source_date_epoch == 1736952684


@pytest.mark.network
def test_safe_extract_biopython(biopython_sdist: Path, tmp_path: Path) -> None:
    top = safe_extract(biopython_sdist, tmp_path)
    assert top == tmp_path / "biopython-1.85"
    assert (top / "setup.py").is_file()
    assert (top / "Bio" / "Cluster" / "cluster.c").is_file()


def _tar(path: Path, files: dict[str, bytes], mtime: int = 1_700_000_000, **links: str) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for i, (name, data) in enumerate(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime + i
            tf.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return path


PYPROJECT = b"""
[build-system]
requires = ["scikit-build-core>=0.10", "numpy>=2"]
build-backend = "scikit_build_core.build"
"""


def test_sdist_facts_reads_build_system(tmp_path: Path) -> None:
    sdist = _tar(
        tmp_path / "pkg-1.0.tar.gz",
        {"pkg-1.0/pyproject.toml": PYPROJECT, "pkg-1.0/src/a.c": b"int a;"},
    )
    facts = sdist_facts(sdist)
    assert facts.top_folder == "pkg-1.0"
    assert facts.build_requires == ("scikit-build-core>=0.10", "numpy>=2")
    assert facts.build_backend == "scikit_build_core.build"
    assert facts.has_pyproject
    assert facts.source_date_epoch == 1_700_000_001
    assert not (tmp_path / "pkg-1.0").exists()  # read in place, never extracted


def test_sdist_facts_pyproject_without_build_system(tmp_path: Path) -> None:
    sdist = _tar(tmp_path / "pkg-1.0.tar.gz", {"pkg-1.0/pyproject.toml": b"[tool.black]\n"})
    facts = sdist_facts(sdist)
    assert facts.has_pyproject
    assert (facts.build_requires, facts.build_backend) == (LEGACY_REQUIRES, LEGACY_BACKEND)


def test_sdist_facts_build_system_without_requires_is_an_error(tmp_path: Path) -> None:
    sdist = _tar(
        tmp_path / "pkg-1.0.tar.gz",
        {"pkg-1.0/pyproject.toml": b'[build-system]\nbuild-backend = "x"\n'},
    )
    with pytest.raises(BuildError, match="requires"):
        sdist_facts(sdist)


def test_sdist_facts_zip(tmp_path: Path) -> None:
    path = tmp_path / "pkg-1.0.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("pkg-1.0/setup.py", (2020, 1, 2, 3, 4, 6)), b"")
        zf.writestr(zipfile.ZipInfo("pkg-1.0/pyproject.toml", (2019, 1, 1, 0, 0, 0)), PYPROJECT)
    facts = sdist_facts(path)
    assert facts.top_folder == "pkg-1.0"
    assert facts.build_backend == "scikit_build_core.build"
    assert facts.source_date_epoch == int(datetime(2020, 1, 2, 3, 4, 6, tzinfo=UTC).timestamp())


def test_sdist_without_single_top_folder(tmp_path: Path) -> None:
    sdist = _tar(tmp_path / "bad-1.0.tar.gz", {"a/setup.py": b"", "b/setup.py": b""})
    with pytest.raises(FetchError, match="one top folder"):
        sdist_facts(sdist)


@pytest.mark.parametrize(
    ("files", "links"),
    [
        ({"pkg-1.0/setup.py": b"", "pkg-1.0/../evil": b"x"}, {}),
        ({"pkg-1.0/../../evil": b"x"}, {}),
        ({"/tmp/pkg-1.0/evil": b"x"}, {}),
        ({"pkg-1.0/setup.py": b""}, {"pkg-1.0/link": "../../outside"}),
        ({"pkg-1.0/setup.py": b""}, {"pkg-1.0/link": "/etc/passwd"}),
    ],
    ids=["dotdot", "dotdot-deep", "absolute", "symlink-out", "symlink-absolute"],
)
def test_safe_extract_refuses_escapes(
    tmp_path: Path, files: dict[str, bytes], links: dict[str, str]
) -> None:
    sdist = _tar(tmp_path / "pkg-1.0.tar.gz", files, **links)
    dest = tmp_path / "out"
    with pytest.raises(FetchError, match="refusing to extract pkg-1.0.tar.gz: member .* outside"):
        safe_extract(sdist, dest)
    assert not (tmp_path / "evil").exists()
    assert list(dest.iterdir()) == []  # checked before anything is written


def test_safe_extract_refuses_zip_escape(tmp_path: Path) -> None:
    path = tmp_path / "pkg-1.0.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg-1.0/setup.py", b"")
        zf.writestr("pkg-1.0/../../evil", b"x")
    with pytest.raises(FetchError, match="outside"):
        safe_extract(path, tmp_path / "out")


def test_safe_extract_returns_top_and_keeps_inner_links(tmp_path: Path) -> None:
    sdist = _tar(
        tmp_path / "pkg-1.0.tar.gz",
        {"pkg-1.0/setup.py": b"print()", "pkg-1.0/src/a.c": b""},
        **{"pkg-1.0/alias.c": "src/a.c"},
    )
    top = safe_extract(sdist, tmp_path / "out")
    assert top == tmp_path / "out" / "pkg-1.0"
    assert (top / "setup.py").read_bytes() == b"print()"
    assert (top / "alias.c").is_symlink()
    with pytest.raises(FetchError, match="already exists"):
        safe_extract(sdist, tmp_path / "out")


# --- lock files -------------------------------------------------------------------------------


def test_lock_entries_from_dir_and_round_trip(tmp_path: Path) -> None:
    (tmp_path / "numpy-2.1.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")
    (tmp_path / "Setuptools-75.1.0.tar.gz").write_bytes(b"sdist")
    (tmp_path / ".wheel-1.0-py3-none-any.whl.abc.part").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("not a distribution")
    entries = lock_entries_from_dir(tmp_path, "build")
    assert [(e.name, e.version, e.kind) for e in entries] == [
        ("setuptools", "75.1.0", "build"),
        ("numpy", "2.1.0", "build"),
    ]
    assert entries[1].sha256 == pypi.sha256_of(tmp_path / entries[1].filename)

    sdist = LockEntry(
        "biopython",
        "1.85",
        "biopython-1.85.tar.gz",
        BIOPYTHON_SHA256,
        "sdist",
        "https://example.invalid/biopython-1.85.tar.gz",
    )
    lock = Lock((*entries, sdist))
    text = lock.to_json()
    assert Lock.from_json(text).to_json() == text
    assert set(Lock.from_json(text).entries) == set(lock.entries)
    assert Lock(tuple(reversed(lock.entries))).to_json() == text  # order-independent
    assert Lock.from_json(text).of_kind("sdist") == [sdist]


def test_lock_from_json_rejects_bad_input() -> None:
    entry = {"name": "a", "version": "1", "filename": "a-1.tar.gz", "sha256": "0", "kind": "x"}
    with pytest.raises(ConfigError, match="kind 'x'"):
        Lock.from_json(json.dumps({"lock_format": 1, "entries": [entry]}))
    with pytest.raises(ConfigError, match="format"):
        Lock.from_json(json.dumps({"lock_format": 99, "entries": []}))
    with pytest.raises(ConfigError, match="malformed"):
        Lock.from_json(json.dumps({"lock_format": 1, "entries": [{"name": "a"}]}))
