"""The Python axis: pinned CPython sources (found, fetched from a mirror, refused), the shared
layer in both renderers, who builds and who takes a wheel, and the CLI's selection."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli.app import app
from builder.errors import ConfigError
from builder.images import python as cpython
from builder.images.apptainer import base_stage_key, render_apptainer, render_base_stage
from builder.images.spec import SourceFile
from builder.pipeline import share
from builder.pipeline.model import TargetResult
from builder.providers import spec_for, unbuildable
from builder.targets.model import all_targets, resolve


@pytest.fixture
def mirror(tmp_path: Path):
    """A real HTTP server over a folder: a mirror for the fetch."""
    root = tmp_path / "mirror"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _file(folder: Path, name: str, data: bytes) -> SourceFile:
    (folder / name).write_bytes(data)
    return SourceFile(name, hashlib.sha256(data).hexdigest(), ())


def test_source_from_the_first_mirror_that_serves_the_pinned_bytes(tmp_path, mirror):
    root, url = mirror
    good = _file(root, "Python-9.9.9.tar.xz", b"the real bytes")
    (root / "bad.tar.xz").write_bytes(b"other bytes")
    src = SourceFile(good.file, good.sha256, (f"{url}/bad.tar.xz", f"{url}/{good.file}"))
    cache = tmp_path / "cache"
    assert cpython.unavailable(src, cache) is None  # a mirror answers
    got = cpython.ensure(src, cache)
    assert got == cache / "sources" / good.file and got.read_bytes() == b"the real bytes"
    assert cpython.locate(src, cache) == got  # later builds: offline, from the cache


def test_source_nowhere_is_not_buildable_with_why_and_fix(tmp_path, mirror, monkeypatch):
    _, url = mirror
    monkeypatch.delenv(cpython.SOURCES_ENV, raising=False)
    src = SourceFile("Python-0.0.0.tar.xz", "0" * 64, (f"{url}/Python-0.0.0.tar.xz",))
    why = cpython.unavailable(src, tmp_path)
    assert "no mirror of Python-0.0.0.tar.xz answers" in why and "HTTP 404" in why
    assert "CBUILD_SOURCES is unset" in why
    with pytest.raises(ConfigError) as exc:
        cpython.ensure(src, tmp_path)
    assert "CBUILD_SOURCES" in exc.value.fix and src.sha256 in exc.value.fix


def test_sources_folder_makes_it_buildable_only_with_the_pinned_bytes(tmp_path, monkeypatch):
    folder = tmp_path / "sources"
    folder.mkdir()
    src = _file(folder, "Python-3.12.11.tar.xz", b"tarball")
    monkeypatch.setenv(cpython.SOURCES_ENV, str(folder))
    assert cpython.locate(src, tmp_path / "cache") == folder / src.file
    (folder / src.file).write_bytes(b"tampered")
    assert cpython.locate(src, tmp_path / "cache") is None


def test_python_312_here_is_reported_not_hidden(monkeypatch):
    """These machines reach no python.org: 3.12 is listed and says why (where a mirror
    answers, as on a CI runner with internet, it is buildable)."""
    monkeypatch.delenv(cpython.SOURCES_ENV, raising=False)
    ts = all_targets(pythons=("3.12", "3.13"))
    skipped = unbuildable(ts)
    assert all(t.python == "3.12" for t in skipped)  # 3.13: Debian's mirror serves it
    for exc in skipped.values():
        assert "Python-3.12.11.tar.xz" in exc.message and "CBUILD_SOURCES" in exc.fix


def test_apptainer_base_stage_carries_the_layer_and_its_file():
    v3, v4 = (spec_for(t) for t in all_targets(pythons=("3.13",))[1:])
    header = "Bootstrap: docker\nFrom: x\n"
    assert base_stage_key(v3, header) == base_stage_key(v4, header)  # one base for the levels
    base = render_base_stage(v3, header, {"Python-3.13.5.tar.xz": "/store/inputs/P.tar.xz"})
    # %post's /tmp is not the one %files wrote to: the file lands outside it, then moves.
    assert "%files\n    /store/inputs/P.tar.xz /cbuild-inputs/Python-3.13.5.tar.xz" in base
    assert "mkdir -p /tmp/cbuild-inputs && mv /cbuild-inputs/* /tmp/cbuild-inputs/" in base
    assert base.index("mv /cbuild-inputs/*") < base.index("./configure")
    assert "./configure --prefix=/opt/python/3.13" in base
    assert "./configure" in render_apptainer(v3)  # the whole definition has it too
    plain = spec_for(all_targets()[1])
    assert "%files" not in render_base_stage(plain, header)


def _result(tid: str, wheel: str | None, pure: bool = False) -> TargetResult:
    r = TargetResult(resolve([tid])[0])
    r.wheel, r.is_pure = (Path(wheel) if wheel else None), pure
    return r


def test_groups_build_each_level_on_its_oldest_python_first():
    ids = ["gentoo2023-x86-64-v3-py313", "gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4"]
    rs = [_result(i, None) for i in ids]
    plan = share.groups(rs, native=True)
    assert [(lead.target.id, [f.target.id for f in fs]) for lead, fs in plan] == [
        ("gentoo2023-x86-64-v3", ["gentoo2023-x86-64-v3-py313"]),
        ("gentoo2023-x86-64-v4", []),
    ]
    ((lead, rest),) = share.groups(rs, native=False)  # no native code: one build for all
    assert lead.target.python == "3.11" and len(rest) == 2


def test_shared_kind_pure_abi3_or_own():
    assert share.shared_kind(_result("gentoo2023-generic", "a-1-py3-none-any.whl", True)) == "pure"
    abi3 = _result("gentoo2023-x86-64-v3", "a-1+computecanada-cp311-abi3-linux_x86_64.whl")
    assert share.shared_kind(abi3) == "abi3"
    own = _result("gentoo2023-x86-64-v3", "a-1+computecanada-cp311-cp311-linux_x86_64.whl")
    assert share.shared_kind(own) is None
    follower = _result("gentoo2023-x86-64-v3-py313", None)
    follower.adopt(abi3, "abi3")
    assert follower.wheel == abi3.wheel and "abi3 wheel: built once on" in follower.reason


@pytest.mark.host_dependent
def test_cli_named_unbuildable_target_is_an_error_all_targets_lists_it(monkeypatch):
    monkeypatch.delenv(cpython.SOURCES_ENV, raising=False)
    if not unbuildable(resolve(["gentoo2023-generic-py312"])):
        pytest.skip("a mirror of Python 3.12 answers here")
    result = CliRunner().invoke(app, ["wheel", "x", "1.0", "-t", "gentoo2023-generic-py312"])
    assert result.exit_code == 2
    assert "not buildable here: no mirror of Python-3.12.11.tar.xz" in result.output
    result = CliRunner().invoke(app, ["targets"])
    assert "not buildable here: Python 3.12" in result.output


def test_cli_python_option_checks_the_version():
    result = CliRunner().invoke(app, ["targets", "--python", "3.9"])
    assert result.exit_code == 2 and "no stack offers Python 3.9" in result.output
