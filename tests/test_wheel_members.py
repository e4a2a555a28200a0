"""A wheel member that leaves the wheel's root (absolute, `..`, a symbolic link pointing out) is
refused by `inspect`, `repair` and `wheel-edit` alike (builder.wheels.members, one owner), on
wheels crafted here byte by byte; nothing is written for a refused wheel."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli.app import app
from builder.wheels.edit import WheelEditError, WheelEdits, edit_wheel
from builder.wheels.info import WheelInspectError, inspect_wheel
from builder.wheels.members import escaping_member
from builder.wheels.repair import RepairError, repair_wheel

NAME = "crafted-1.0-py3-none-any.whl"


def crafted(dest: Path, member: str, data: bytes = b"x", *, link: bool = False) -> Path:
    """A wheel with one extra member (a symbolic link when `link`: its data is the target)."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / NAME
    info = "crafted-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("crafted/__init__.py", b"")
        zi = zipfile.ZipInfo(member)
        zi.create_system = 3
        zi.external_attr = ((stat.S_IFLNK | 0o777) if link else (stat.S_IFREG | 0o644)) << 16
        zf.writestr(zi, data)
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: crafted\nVersion: 1.0\n")
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
    return path


ESCAPING = [
    ("../evil.py", b"x", False, "escapes the wheel's root (absolute or '..' path)"),
    ("/etc/evil.py", b"x", False, "escapes the wheel's root (absolute or '..' path)"),
    ("crafted/../../evil.py", b"x", False, "escapes the wheel's root (absolute or '..' path)"),
    ("C:/evil.py", b"x", False, "escapes the wheel's root (absolute or '..' path)"),
    ("crafted/passwd", b"/etc/passwd", True, "symbolic link to '/etc/passwd'"),
    ("crafted/up", b"../../outside", True, "symbolic link to '../../outside'"),
    ("top", b"sub/../../x", True, "symbolic link to 'sub/../../x'"),
]


@pytest.mark.parametrize(("member", "data", "link", "says"), ESCAPING)
def test_repair_edit_and_inspect_refuse_a_member_leaving_the_root(
    tmp_path: Path, member: str, data: bytes, link: bool, says: str
) -> None:
    wheel = crafted(tmp_path / "in", member, data, link=link)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RepairError, match="refusing to repair it") as rep:
        repair_wheel(wheel, out, label="computecanada", source_date_epoch=315532800)
    with pytest.raises(WheelEditError, match="refusing to edit it") as edit:
        edit_wheel(wheel, WheelEdits(label="computecanada"), out)
    with pytest.raises(WheelInspectError, match="refusing to read it") as insp:
        inspect_wheel(wheel)
    for exc in (rep.value, edit.value, insp.value):
        assert says in exc.message and repr(member) in exc.message and NAME in exc.message
        assert exc.fix
    assert list(out.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("member", "target"),
    [("crafted/lib.so", "lib.so.1"), ("crafted/sub/x", "../y"), ("crafted/a", "./b/../c")],
)
def test_a_link_inside_the_wheel_is_accepted(tmp_path: Path, member: str, target: str) -> None:
    wheel = crafted(tmp_path, member, target.encode(), link=True)
    with zipfile.ZipFile(wheel) as zf:
        assert escaping_member(zf) is None


def test_cli_wheel_edit_refuses_with_the_fix_and_exit_2(tmp_path: Path) -> None:
    wheel = crafted(tmp_path, "../evil.py")
    before = wheel.read_bytes()
    result = CliRunner().invoke(app, ["wheel-edit", str(wheel), "--local-label", "computecanada"])
    assert result.exit_code == 2, result.output
    assert "'../evil.py' escapes the wheel's root" in result.output
    assert "fix:" in result.output
    assert wheel.read_bytes() == before
