"""The hash checks of the fetch step as pure logic: the requirements file of pip's hash-checking
mode, and the wheel store's record of what it was given (builder.pipeline.fetch)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.errors import FetchError
from builder.images.scripts import hashed_requirements
from builder.pipeline.fetch import check_store, check_store_copies, store_wheel
from builder.sources import pypi


def test_hashed_requirements_pin_every_file_by_sha256() -> None:
    entries = [
        pypi.LockEntry(
            "setuptools", "80.9.0", "setuptools-80.9.0-py3-none-any.whl", "a" * 64, "build"
        ),
        pypi.LockEntry("wheel", "0.45.1", "wheel-0.45.1-py3-none-any.whl", "b" * 64, "build"),
    ]
    assert hashed_requirements(entries) == (
        f"setuptools==80.9.0 --hash=sha256:{'a' * 64}\nwheel==0.45.1 --hash=sha256:{'b' * 64}\n"
    )


def _wheel(folder: Path, data: bytes, name: str = "dep-1.0-py3-none-any.whl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def test_the_store_records_and_refuses_a_changed_file(tmp_path: Path) -> None:
    store, dest = tmp_path / "store", tmp_path / "dest"
    store.mkdir()
    store_wheel(_wheel(tmp_path / "fetched", b"served by the index"), store)
    kept = store / "dep-1.0-py3-none-any.whl"
    sha, size, mtime = (store / "dep-1.0-py3-none-any.whl.sha256").read_text().split()
    assert (sha, int(size), int(mtime)) == (
        pypi.sha256_of(kept),
        kept.stat().st_size,
        kept.stat().st_mtime_ns,
    )
    check_store(store)  # nothing changed
    _wheel(dest, b"served by the index")
    check_store_copies(dest, store)  # the same bytes: fine

    os.utime(kept)  # touched, same bytes: still the stored file
    check_store(store)
    _wheel(store, b"changed in the store")  # tampered with: refused before pip runs
    with pytest.raises(FetchError, match="changed since they were stored") as exc:
        check_store(store)
    assert "dep-1.0-py3-none-any.whl: sha256" in exc.value.message and str(store) in exc.value.fix
    _wheel(dest, b"changed in the store")  # and after, when pip took it from there
    with pytest.raises(FetchError, match="changed since they were stored"):
        check_store_copies(dest, store)


def test_an_older_store_file_is_recorded_on_first_use(tmp_path: Path) -> None:
    store, dest = tmp_path / "store", tmp_path / "dest"
    _wheel(store, b"from an older cbuild")
    _wheel(dest, b"from an older cbuild")
    check_store_copies(dest, store)
    assert (store / "dep-1.0-py3-none-any.whl.sha256").is_file()
    _wheel(tmp_path / "other", b"a wheel the store does not have", "other-1.0-py3-none-any.whl")
    check_store_copies(tmp_path / "other", store)  # not from the store: nothing to compare
