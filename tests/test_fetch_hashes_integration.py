"""Every fetched dependency is checked against a recorded sha256 on every run, with the real
engine: the wheel store keeps each file's sha256 from when pip fetched it (pip checked it against
the index's), and a store file changed since is refused on the next run, not built with; a
rebuild fetches what its store lacks through pip's hash-checking mode."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from builder.cache import Cache
from builder.errors import FetchError
from builder.manifest import Manifest
from builder.pipeline.job import Pipeline
from builder.pipeline.model import WheelRequest
from builder.sources import pypi
from builder.targets.model import resolve
from tests.conftest import FIXTURE_RECIPE, make_sdist

pytestmark = pytest.mark.integration


def _run(engine, tmp: Path, cache: Path, name: str, **kw):
    req = WheelRequest(
        "isafixture",
        "0.1.0",
        tuple(resolve(["gentoo2023-generic"])),
        tmp / name,
        cache,
        FIXTURE_RECIPE.parent,
        sdist=make_sdist(tmp / "sdist"),
        **kw,
    )
    return Pipeline(engine, lambda t, m: None).run(req)


def test_a_changed_wheel_in_the_store_is_refused(engine, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _run(engine, tmp_path, cache, "wh1")
    assert first.ok, first.error
    # The image's installed packages, probed in the build's container, in the manifest.
    (manifest,) = [Manifest.load(p) for p in (tmp_path / "wh1").rglob("*.whl.json")]
    packages = manifest.image_packages
    assert any(p.startswith("libc6=") for p in packages["deb"]), packages
    assert all("=" in p for p in packages["deb"] + packages["python"])
    assert "image_packages" not in manifest.build
    store = Cache(cache).wheels
    stored = sorted(store.glob("*.whl"))
    assert stored, "the build requirements went to the store"
    for p in stored:  # each with the sha256 it entered with
        assert (store / f"{p.name}.sha256").read_text().split()[0] == pypi.sha256_of(p)

    # Tamper with a build requirement in the store: still a valid wheel, other bytes.
    victim = next(p for p in stored if p.name.startswith("setuptools-"))
    with zipfile.ZipFile(victim, "a") as zf:
        zf.writestr("setuptools/_injected.py", "print('not what the index served')\n")
    with pytest.raises(FetchError) as exc:
        _run(engine, tmp_path, cache, "wh2", rebuild=True)
    assert (
        victim.name in exc.value.message and "changed since they were stored" in exc.value.message
    )
    assert str(store) in exc.value.fix
    assert not (tmp_path / "wh2").exists() or not list((tmp_path / "wh2").rglob("*.whl"))
