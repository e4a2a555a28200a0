"""The comparison behind `cbuild verify`, on real wheels holding shared objects compiled here by
the host gcc in the ways builds really go wrong: another time stamp, another source folder,
another -march. No engine: the rebuild itself is in test_verify_integration.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from builder.errors import ConfigError
from builder.wheels.compare import compare_member, compare_wheels, elf_hints
from builder.wheels.info import WheelInspectError
from builder.workflows.verify import find_placed

SO = "pkg/_native.cpython-311-x86_64-linux-gnu.so"
SOURCE = """
__attribute__((used)) const char stamp[] = STAMP;
double scale(double x) { double s = 0; for (int i = 0; i < 64; i++) s += x * i; return s; }
"""
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs the host gcc")


STAMP = "Jan  1 2024 00:00:00"


def build_so(folder: Path, stamp: str = STAMP, flags: tuple[str, ...] = ()) -> bytes:
    """A shared object compiled from `folder` (with -g: the folder is in its debug info)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "native.c").write_text(SOURCE)
    cmd = ["gcc", "-shared", "-fPIC", "-O2", "-g", f'-DSTAMP="{stamp}"', *flags, "native.c"]
    subprocess.run([*cmd, "-o", "native.so"], check=True, capture_output=True, cwd=folder)
    return (folder / "native.so").read_bytes()


def make_wheel(
    path: Path,
    files: dict[str, bytes],
    date_time: tuple[int, ...] = (2023, 11, 14, 22, 13, 20),
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return path


META = b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0+computecanada\n"
NAME = "pkg-1.0+computecanada-cp311-cp311-linux_x86_64.whl"


def base_files(so: bytes = b"") -> dict[str, bytes]:
    return {
        "pkg/__init__.py": b"from pkg._native import *\n",
        **({SO: so} if so else {}),
        "pkg-1.0+computecanada.dist-info/METADATA": META,
        "pkg-1.0+computecanada.dist-info/RECORD": b"pkg/__init__.py,sha256=x,26\n",
    }


def test_identical_wheels(tmp_path) -> None:
    a = make_wheel(tmp_path / "a" / NAME, base_files())
    b = make_wheel(tmp_path / "b" / NAME, base_files())
    comp = compare_wheels(a, b)
    assert comp.identical and comp.text() == "identical" and comp.members == []


def test_metadata_difference_is_a_unified_diff(tmp_path) -> None:
    a = make_wheel(tmp_path / "a" / NAME, base_files())
    files = base_files()
    files["pkg-1.0+computecanada.dist-info/METADATA"] = META + b"Requires-Dist: numpy\n"
    b = make_wheel(tmp_path / "b" / NAME, files)
    comp = compare_wheels(a, b)
    assert not comp.identical
    (m,) = comp.members
    assert m.name.endswith("METADATA") and m.kind == "text"
    assert "+Requires-Dist: numpy" in m.diff
    text = comp.text()
    assert "DIFFERENT: 1 of 3 files in the wheel differ" in text
    assert "+++ rebuilt/pkg-1.0+computecanada.dist-info/METADATA" in text


def test_members_only_in_one_wheel(tmp_path) -> None:
    a = make_wheel(tmp_path / "a" / NAME, base_files())
    b = make_wheel(tmp_path / "b" / NAME, {**base_files(), "pkg/extra.py": b"x = 1\n"})
    comp = compare_wheels(a, b)
    assert [(m.name, m.kind) for m in comp.members] == [("pkg/extra.py", "only-in-rebuilt")]


def test_zip_level_difference_with_the_same_files(tmp_path) -> None:
    a = make_wheel(tmp_path / "a" / NAME, base_files())
    b = make_wheel(tmp_path / "b" / NAME, base_files(), date_time=(2024, 1, 1, 0, 0, 0))
    comp = compare_wheels(a, b)
    assert not comp.identical and comp.members == []
    assert "every file's content is the same; the zip archive differs" in comp.text()
    assert any("entry times differ in 3 entries" in n for n in comp.zip_notes)
    assert any("SOURCE_DATE_EPOCH" in n for n in comp.zip_notes)


@needs_gcc
def test_time_stamp_in_rodata_is_named_with_its_strings(tmp_path) -> None:
    src = tmp_path / "src"
    a = make_wheel(tmp_path / "a" / NAME, base_files(build_so(src, "Nov 25 2025 15:19:53")))
    b = make_wheel(tmp_path / "b" / NAME, base_files(build_so(src, "Nov 25 2025 15:20:11")))
    comp = compare_wheels(a, b)
    (m,) = comp.members
    assert m.name == SO and m.kind == "elf"
    by = {s.name: s for s in m.sections}
    assert ".rodata" in by and ".text" not in by
    assert by[".rodata"].what == "content differs"
    assert by[".rodata"].only_in_placed == ["Nov 25 2025 15:19:53"]
    assert by[".rodata"].only_in_rebuilt == ["Nov 25 2025 15:20:11"]
    assert any("constant data differs (.rodata)" in h for h in m.hints)
    text = comp.text()
    assert SO in text and ".rodata: content differs" in text and "15:20:11" in text


@needs_gcc
def test_another_source_folder_shows_in_debug_sections_only(tmp_path) -> None:
    a = make_wheel(tmp_path / "a" / NAME, base_files(build_so(tmp_path / "one")))
    b = make_wheel(tmp_path / "b" / NAME, base_files(build_so(tmp_path / "other-folder")))
    (m,) = compare_wheels(a, b).members
    names = {s.name for s in m.sections}
    assert names and all(n.startswith((".debug_", ".note.gnu.build-id")) for n in names), names
    assert any("only debug information differs" in h for h in m.hints)
    strings = [s for sec in m.sections for s in sec.only_in_rebuilt]
    assert any("other-folder" in s for s in strings)


@needs_gcc
def test_another_march_changes_the_code(tmp_path) -> None:
    src = tmp_path / "src"
    a = make_wheel(tmp_path / "a" / NAME, base_files(build_so(src, flags=("-march=x86-64",))))
    b = make_wheel(tmp_path / "b" / NAME, base_files(build_so(src, flags=("-march=x86-64-v3",))))
    (m,) = compare_wheels(a, b).members
    assert ".text" in {s.name for s in m.sections}
    assert any(h.startswith("machine code differs (.text") for h in m.hints)


def test_binary_member_difference() -> None:
    m = compare_member("pkg/data.bin", b"\x00\x01\x02\x03", b"\x00\x01\xff\x03")
    assert m.kind == "binary" and "first difference at byte 0x2" in m.summary


def test_elf_hints() -> None:
    assert elf_hints([".note.gnu.build-id"]) == [
        ".note.gnu.build-id is a hash of the rest: it differs whenever anything does"
    ]
    assert any(".comment differs" in h for h in elf_hints([".comment"]))
    assert any("symbols differ" in h for h in elf_hints([".dynsym"]))


def test_bad_wheels_are_refused(tmp_path) -> None:
    good = make_wheel(tmp_path / "good" / NAME, base_files())
    not_zip = tmp_path / "bad" / NAME
    not_zip.parent.mkdir()
    not_zip.write_text("not a zip")
    with pytest.raises(WheelInspectError, match="not a zip archive"):
        compare_wheels(good, not_zip)
    escaping = make_wheel(tmp_path / "esc" / NAME, {**base_files(), "../evil.py": b""})
    with pytest.raises(WheelInspectError, match="escapes the wheel's root"):
        compare_wheels(escaping, good)


def _place(wh: Path, folder: str, name: str, target: str | None) -> Path:
    path = make_wheel(wh / folder / name, base_files())
    if target:
        (wh / folder / f"{name}.json").write_text(json.dumps({"target": {"id": target}}))
    return path


def test_find_placed_by_manifest_target(tmp_path) -> None:
    wh = tmp_path / "wh"
    v3 = _place(wh, "gentoo2023/x86-64-v3", NAME, "gentoo2023-x86-64-v3")
    _place(wh, "gentoo2023/x86-64-v4", NAME, "gentoo2023-x86-64-v4")
    assert find_placed(wh, "PKG", "1.0", "gentoo2023-x86-64-v3") == v3
    with pytest.raises(ConfigError) as exc:
        find_placed(wh, "pkg", "1.0", "gentoo2023-generic")
    assert "no wheel of pkg 1.0 built for gentoo2023-generic" in exc.value.message
    assert "gentoo2023/x86-64-v3/" + NAME + " (target gentoo2023-x86-64-v3)" in exc.value.message
    assert "cbuild wheel pkg 1.0 --target gentoo2023-generic" in exc.value.fix
