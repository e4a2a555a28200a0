"""Repair on real wheels written with zipfile: labels, tags, requirements, RECORD, determinism."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from builder.wheels.contents import import_names
from builder.wheels.repair import (
    RepairError,
    local_version,
    repair_wheel,
    requires_dist,
    wheel_content_digest,
    wheel_sha256,
)

SDE = 1700000000
MANYLINUX = "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"
SO = "Bio/_align.cpython-311-x86_64-linux-gnu.so"


def make_wheel(
    out: Path,
    dist: str = "biopython",
    version: str = "1.85",
    tag: str = MANYLINUX,
    files: dict[str, bytes] | None = None,
    requires: tuple[str, ...] = (
        "numpy",
        "nvidia-cublas-cu12==12.1.3.1; platform_system == 'Linux'",
        'scipy>=1.10; extra == "full"',
        "Nvidia_CUDNN_cu12",
    ),
    purelib: bool = False,
    date_time: tuple[int, ...] = (2024, 5, 6, 7, 8, 10),
) -> Path:
    """A wheel shaped like a real build backend's output, with the kinds of noise (directory
    entries, local timestamps, mixed modes) that repair must normalize."""
    files = (
        {"Bio/__init__.py": b"__version__ = '1.85'\n", SO: b"\x7fELF fake"}
        if files is None
        else files
    )
    py, abi, plat = tag.split("-")
    info = f"{dist}-{version}.dist-info"
    metadata = (
        "Metadata-Version: 2.1\n"
        f"Name: {dist}\n"
        f"Version: {version}\n"
        "Summary: Freely available tools for computational molecular biology.\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
        + "Provides-Extra: full\n"
        "\n"
        "Version: this line is in the description and must not change\n"
    )
    wheel = (
        "Wheel-Version: 1.0\nGenerator: bdist_wheel (0.43.0)\n"
        f"Root-Is-Purelib: {'true' if purelib else 'false'}\n"
        + "".join(
            f"Tag: {x}-{y}-{z}\n"
            for x in py.split(".")
            for y in abi.split(".")
            for z in plat.split(".")
        )
        + "\n"
    )
    contents = {**files, f"{info}/METADATA": metadata.encode(), f"{info}/WHEEL": wheel.encode()}
    record = (
        "".join(f"{n},sha256=bogus,{len(d)}\n" for n, d in contents.items()) + f"{info}/RECORD,,\n"
    )
    path = out / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo("Bio/", date_time), b"")  # a directory entry
        for name, data in [*contents.items(), (f"{info}/RECORD", record.encode())]:
            zi = zipfile.ZipInfo(name, date_time)
            zi.external_attr = (0o100775 if name.endswith("run.sh") else 0o100664) << 16
            zf.writestr(zi, data)
    return path


def read(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def info_dir(path: Path) -> str:
    return next(n.split("/")[0] for n in read(path) if n.endswith(".dist-info/METADATA"))


def test_local_version_rules() -> None:
    assert local_version("1.85", "computecanada") == "1.85+computecanada"
    assert local_version("1.85", "computecanada", ("torch27",)) == "1.85+torch27.computecanada"
    assert local_version("1.0+abc", "computecanada") == "1.0+abc.computecanada"
    assert local_version("2.1+cu121", "computecanada", ("cu121",)) == "2.1+cu121.computecanada"
    # Idempotent, also with tags.
    assert local_version("1.85+computecanada", "computecanada") == "1.85+computecanada"
    assert local_version("1.85+torch27.computecanada", "computecanada", ("torch27",)) == (
        "1.85+torch27.computecanada"
    )
    assert local_version("1.0-post1", "computecanada") == "1.0.post1+computecanada"
    with pytest.raises(RepairError, match="not-a-version"):
        local_version("not-a-version", "computecanada")
    with pytest.raises(RepairError):
        local_version("1.0", "bad label!")


def test_repair_applies_site_rules(tmp_path: Path) -> None:
    src = make_wheel(tmp_path)
    result = repair_wheel(src, tmp_path / "out", label="computecanada", source_date_epoch=SDE)

    assert result.path.name == "biopython-1.85+computecanada-cp311-cp311-linux_x86_64.whl"
    assert result.path.parent == tmp_path / "out"
    assert (result.name, result.version) == ("biopython", "1.85+computecanada")
    assert result.tags == ("cp311-cp311-linux_x86_64",)
    assert not result.is_pure and result.has_shared_libs
    assert result.changes  # every change is described

    files = read(result.path)
    info = "biopython-1.85+computecanada.dist-info"
    assert not any(n.startswith("biopython-1.85.dist-info/") for n in files)
    assert not any(n.endswith("/") for n in files)  # directory entries dropped
    metadata = files[f"{info}/METADATA"].decode()
    assert "\nVersion: 1.85+computecanada\n" in metadata
    assert "Version: this line is in the description and must not change" in metadata
    wheel = files[f"{info}/WHEEL"].decode()
    assert [ln for ln in wheel.splitlines() if ln.startswith("Tag:")] == [
        "Tag: cp311-cp311-linux_x86_64"
    ]
    assert "manylinux" not in wheel


def test_requirements_nvidia_removed_others_kept(tmp_path: Path) -> None:
    result = repair_wheel(
        make_wheel(tmp_path), tmp_path / "out", label="computecanada", source_date_epoch=SDE
    )
    assert requires_dist(result.path) == ["numpy", 'scipy>=1.10; extra == "full"']
    assert sum("removed Requires-Dist" in c for c in result.changes) == 2


def test_record_is_valid(tmp_path: Path) -> None:
    result = repair_wheel(
        make_wheel(tmp_path), tmp_path / "out", label="computecanada", source_date_epoch=SDE
    )
    files = read(result.path)
    info = info_dir(result.path)
    rows = list(csv.reader(io.StringIO(files[f"{info}/RECORD"].decode())))
    assert {r[0] for r in rows} == set(files)
    for name, digest, size in rows:
        if name == f"{info}/RECORD":
            assert (digest, size) == ("", "")
            continue
        raw = base64.urlsafe_b64encode(hashlib.sha256(files[name]).digest()).rstrip(b"=")
        assert digest == "sha256=" + raw.decode()
        assert int(size) == len(files[name])


def test_zip_is_normalized(tmp_path: Path) -> None:
    files = {"Bio/__init__.py": b"", SO: b"\x7fELF", "Bio/run.sh": b"#!/bin/sh\n"}
    result = repair_wheel(
        make_wheel(tmp_path, files=files), tmp_path / "out", label="cc", source_date_epoch=0
    )
    with zipfile.ZipFile(result.path) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names[-1].endswith(".dist-info/RECORD")
    first_info = next(i for i, n in enumerate(names) if ".dist-info/" in n)
    assert all(".dist-info/" in n for n in names[first_info:])
    assert names[:first_info] == sorted(names[:first_info])
    modes = {i.filename: (i.external_attr >> 16) & 0o7777 for i in infos}
    assert modes[SO] == modes["Bio/run.sh"] == 0o755
    assert modes["Bio/__init__.py"] == 0o644
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)  # clamped
    assert all(i.extra == b"" and i.compress_type == zipfile.ZIP_DEFLATED for i in infos)


def test_deterministic_and_idempotent(tmp_path: Path) -> None:
    a = repair_wheel(make_wheel(tmp_path), tmp_path / "a", label="cc", source_date_epoch=SDE)
    # Same content, different zip noise: a different timestamp in the input.
    (tmp_path / "other").mkdir()
    src_b = make_wheel(tmp_path / "other", date_time=(2020, 1, 1, 0, 0, 0))
    b = repair_wheel(src_b, tmp_path / "b", label="cc", source_date_epoch=SDE)
    assert wheel_sha256(a.path) == wheel_sha256(b.path)

    again = repair_wheel(a.path, tmp_path / "c", label="cc", source_date_epoch=SDE)
    assert again.path.name == a.path.name
    assert again.path.read_bytes() == a.path.read_bytes()
    assert again.changes == []

    # In place: the output replaces the input atomically, with the same bytes.
    before = a.path.read_bytes()
    in_place = repair_wheel(a.path, a.path.parent, label="cc", source_date_epoch=SDE)
    assert in_place.path == a.path and a.path.read_bytes() == before
    assert sorted(p.name for p in a.path.parent.iterdir()) == [a.path.name]  # no temporaries


def test_content_digest_ignores_zip_details(tmp_path: Path) -> None:
    src = make_wheel(tmp_path)
    a = repair_wheel(src, tmp_path / "a", label="cc", source_date_epoch=SDE)
    b = repair_wheel(src, tmp_path / "b", label="cc", source_date_epoch=SDE + 86400)
    assert wheel_sha256(a.path) != wheel_sha256(b.path)
    assert wheel_content_digest(a.path) == wheel_content_digest(b.path)
    (tmp_path / "x").mkdir()
    files = {"Bio/__init__.py": b"", SO: b"\x7fELF other code"}
    c = repair_wheel(
        make_wheel(tmp_path / "x", files=files), tmp_path / "c", label="cc", source_date_epoch=SDE
    )
    assert wheel_content_digest(c.path) != wheel_content_digest(a.path)


def test_tags_go_before_label_and_existing_local_kept(tmp_path: Path) -> None:
    src = make_wheel(tmp_path, version="2.7.0+cu126")
    result = repair_wheel(
        src, tmp_path / "out", label="computecanada", tags=("torch27",), source_date_epoch=SDE
    )
    assert result.version == "2.7.0+cu126.torch27.computecanada"
    assert info_dir(result.path) == "biopython-2.7.0+cu126.torch27.computecanada.dist-info"


def test_pure_any_wheel_with_shared_library_gets_platform_tag(tmp_path: Path) -> None:
    files = {"fast/__init__.py": b"", "fast/_core.cpython-312-x86_64-linux-gnu.so": b"\x7fELF"}
    src = make_wheel(
        tmp_path, dist="fast", version="0.3", tag="py3-none-any", files=files, purelib=True
    )
    result = repair_wheel(src, tmp_path / "out", label="cc", source_date_epoch=SDE)
    assert result.path.name == "fast-0.3+cc-cp312-cp312-linux_x86_64.whl"
    assert not result.is_pure and result.has_shared_libs
    wheel = read(result.path)[f"{info_dir(result.path)}/WHEEL"].decode()
    assert "Root-Is-Purelib: false" in wheel
    assert [ln for ln in wheel.splitlines() if ln.startswith("Tag:")] == [
        "Tag: cp312-cp312-linux_x86_64"
    ]


def _elf_header(machine: int) -> bytes:
    return b"\x7fELF\x02\x01\x01" + bytes(11) + machine.to_bytes(2, "little") + bytes(44)


@pytest.mark.parametrize(
    "elf_file",
    [
        "fast/libhelper.so.1",  # a ctypes library
        "fast/bin/helper",  # a program, no .so in its name
        "fast/_core.abi3.so",  # an abi3 module: no one CPython
    ],
)
def test_pure_any_wheel_with_elf_files_gets_py3_none_linux(tmp_path: Path, elf_file: str) -> None:
    files = {"fast/__init__.py": b"", elf_file: _elf_header(62), "fast/data.txt": b"\x7fEL"}
    src = make_wheel(
        tmp_path, dist="fast", version="0.3", tag="py3-none-any", files=files, purelib=True
    )
    result = repair_wheel(src, tmp_path / "out", label="cc", source_date_epoch=SDE)
    assert result.path.name == "fast-0.3+cc-py3-none-linux_x86_64.whl"
    assert result.tags == ("py3-none-linux_x86_64",)
    assert not result.is_pure and result.has_shared_libs
    wheel = read(result.path)[f"{info_dir(result.path)}/WHEEL"].decode()
    assert "Root-Is-Purelib: false" in wheel and "Tag: py3-none-linux_x86_64" in wheel
    assert "tag py3-none-any -> py3-none-linux_x86_64" in result.changes


def test_any_wheel_with_elf_of_other_machines(tmp_path: Path) -> None:
    files = {"fast/__init__.py": b"", "fast/libarm.so": _elf_header(183)}
    src = make_wheel(tmp_path, dist="fast", version="0.3", tag="py3-none-any", files=files)
    result = repair_wheel(src, tmp_path / "out", label="cc", source_date_epoch=SDE)
    assert result.path.name == "fast-0.3+cc-py3-none-linux_aarch64.whl"
    files["fast/libx.so"] = _elf_header(62)
    src = make_wheel(tmp_path, dist="fast", version="0.3", tag="py3-none-any", files=files)
    with pytest.raises(RepairError, match="machines aarch64, x86_64") as err:
        repair_wheel(src, tmp_path / "out2", label="cc", source_date_epoch=SDE)
    assert err.value.fix
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def test_any_wheel_with_extensions_of_several_pythons_is_refused(tmp_path: Path) -> None:
    files = {
        "fast/_a.cpython-311-x86_64-linux-gnu.so": b"\x7fELF",
        "fast/_a.cpython-312-x86_64-linux-gnu.so": b"\x7fELF",
    }
    src = make_wheel(tmp_path, dist="fast", version="0.3", tag="py3-none-any", files=files)
    with pytest.raises(RepairError, match=r"several Pythons \(cp311, cp312\)"):
        repair_wheel(src, tmp_path / "out", label="cc", source_date_epoch=SDE)


def test_pure_wheel_stays_pure(tmp_path: Path) -> None:
    files = {"six.py": b"x = 1\n"}
    src = make_wheel(
        tmp_path,
        dist="six",
        version="1.16.0",
        tag="py2.py3-none-any",
        files=files,
        requires=(),
        purelib=True,
    )
    result = repair_wheel(src, tmp_path / "out", label="cc", source_date_epoch=SDE)
    assert result.path.name == "six-1.16.0+cc-py2.py3-none-any.whl"
    assert result.is_pure and not result.has_shared_libs
    assert result.tags == ("py2-none-any", "py3-none-any")
    assert import_names(result.path).names == ("six",)


def test_dotted_name_and_data_dir_keep_their_spelling(tmp_path: Path) -> None:
    files = {
        "ruamel/yaml/clib/__init__.py": b"",
        "_ruamel_yaml.cpython-311-x86_64-linux-gnu.so": b"\x7fELF",
        "ruamel.yaml.clib-0.2.8.data/scripts/tool": b"#!python\n",
    }
    src = make_wheel(tmp_path, dist="ruamel.yaml.clib", version="0.2.8", files=files, requires=())
    result = repair_wheel(src, tmp_path / "out", label="cc", source_date_epoch=SDE)
    assert result.path.name.startswith("ruamel.yaml.clib-0.2.8+cc-")
    assert result.name == "ruamel-yaml-clib"
    names = set(read(result.path))
    assert "ruamel.yaml.clib-0.2.8+cc.data/scripts/tool" in names
    assert "ruamel.yaml.clib-0.2.8+cc.dist-info/METADATA" in names
    assert import_names(result.path).names == ("_ruamel_yaml", "ruamel.yaml.clib")


def test_import_names(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": b"",
        "mod.py": b"",
        "_private.cpython-311-x86_64-linux-gnu.so": b"",
        "pkg.libs/libz.so.1": b"",
        "tool-1.0.data/purelib/extra/__init__.py": b"",
    }
    src = make_wheel(tmp_path, dist="tool", version="1.0", files=files, requires=())
    # the private extension module is compiled code of the wheel: imported too
    assert import_names(src).names == ("_private", "extra", "mod", "pkg")
    (tmp_path / "p").mkdir()
    only_private = {"_cffi_backend.cpython-311-x86_64-linux-gnu.so": b""}
    src = make_wheel(tmp_path / "p", dist="cffi", version="1.0", files=only_private)
    assert import_names(src).names == ("_cffi_backend",)
