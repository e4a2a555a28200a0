"""Import names from what the wheel holds, and build keys from the bytes of the source, end
to end with the real engine (issue 10, points 2 and 3).

The fixture tests/fixtures/nsfixture lists a namespace `nsfix` in its packages: setuptools
writes it into top_level.txt, but the wheel holds only the extension module `_nsfix`. Taking
import names from top_level.txt imported `nsfix` and failed on every target.
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest

from builder.pipeline.job import Pipeline
from builder.pipeline.model import RunReport, Status, WheelRequest
from builder.targets.model import resolve

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "nsfixture"
V3 = resolve(["gentoo2023-x86-64-v3"])


def nsfixture_sdist(dest: Path, c_edit: bytes = b"") -> Path:
    """`nsfixture-0.1.0.tar.gz`, fixed mtimes; `c_edit` appended to the C source."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / "nsfixture-0.1.0.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for p in sorted(FIXTURE.rglob("*")):
            if not p.is_file():
                continue
            data = p.read_bytes() + (c_edit if p.name == "nsfix.c" else b"")
            info = tarfile.TarInfo(f"nsfixture-0.1.0/{p.relative_to(FIXTURE).as_posix()}")
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out


def run(engine, sdist: Path, tmp: Path, **kw) -> RunReport:
    recipes = tmp / "no-recipes"  # no recipe: the import names come from the wheel
    recipes.mkdir(exist_ok=True)
    req = WheelRequest(
        "nsfixture", "0.1.0", tuple(V3), tmp / "wh", tmp / "cache", recipes, sdist=sdist, **kw
    )
    return Pipeline(engine, lambda t, m: None).run(req)


class NoEngine:
    def __getattr__(self, name: str):
        raise AssertionError(f"the engine was used ({name}) on a no-op rerun")


def test_import_names_from_the_wheel_and_keys_from_the_source_bytes(engine, tmp_path) -> None:
    sdist = nsfixture_sdist(tmp_path / "src")
    first = run(engine, sdist, tmp_path)
    assert first.ok, first.error
    r = first.results[0]
    assert r.status is Status.TESTED, r.test_detail
    # The test imported what the wheel holds, and said where top_level.txt disagrees.
    assert "note: top_level.txt names nsfix, which the wheel does not hold" in r.test_detail
    assert "imported: _nsfix" in r.test_detail
    log = r.test_log.read_text()
    assert "import _nsfix" in log and "import nsfix" not in log

    # Unchanged: a no-op, without a container, in under 2 s.
    t0 = time.monotonic()
    again = run(NoEngine(), sdist, tmp_path)
    assert time.monotonic() - t0 < 2
    assert [x.status for x in again.results] == [Status.UP_TO_DATE]

    # One byte more in the C source, same file name: built again, not "up to date".
    changed = nsfixture_sdist(tmp_path / "src", c_edit=b"\n")
    assert changed == sdist
    third = run(engine, sdist, tmp_path, force=True)
    assert third.ok, third.error
    t = third.results[0]
    assert t.status is Status.TESTED, t.test_detail
    assert t.seconds.get("build", 0) > 0 and t.build_key != r.build_key
