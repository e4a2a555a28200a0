"""`inspect_wheel`, `explain_placement` and their commands, on real wheels holding real shared
objects compiled here by the host gcc."""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli.app import app
from builder.wheels.info import (
    CONTAINS_NOTE,
    WheelInspectError,
    explain_placement,
    inspect_wheel,
)

KERNEL = Path(__file__).parent / "fixtures/isafixture/src/isafixture/_kernel.c"
EXT = "isafixture/_kernel.cpython-311-x86_64-linux-gnu.so"
PLAT = "cp311-cp311-linux_x86_64"


def build_so(out: Path, march: str) -> Path:
    include = sysconfig.get_paths()["include"]
    cmd = ["gcc", "-shared", "-fPIC", "-O2", f"-march={march}", f"-I{include}", str(KERNEL)]
    subprocess.run([*cmd, "-o", str(out)], check=True, capture_output=True)
    return out


def make_wheel(
    dest: Path,
    *,
    version: str = "0.1.0+computecanada",
    tag: str = PLAT,
    files: dict[str, bytes] | None = None,
    requires: tuple[str, ...] = (),
    wheel_tags: tuple[str, ...] | None = None,
    name: str = "isafixture",
) -> Path:
    """A real wheel: the given files, METADATA, WHEEL and RECORD."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    files = {"isafixture/__init__.py": b"", **(files or {})}
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    purelib = "true" if tag.endswith("-any") else "false"
    wheel = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: {purelib}\n"
    wheel += "".join(f"Tag: {t}\n" for t in (wheel_tags or (tag,)))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in files.items():
            zf.writestr(n, data)
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(f"{info}/WHEEL", wheel)
        zf.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture(scope="module")
def sos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    if shutil.which("gcc") is None:
        pytest.skip("no host gcc to compile the kernel with")
    d = tmp_path_factory.mktemp("so")
    return {lv: build_so(d / f"{lv}.so", f"x86-64-{lv}").read_bytes() for lv in ("v3", "v4")}


@pytest.fixture
def wheels(tmp_path: Path, sos: dict[str, bytes]) -> dict[str, Path]:
    return {lv: make_wheel(tmp_path / lv, files={EXT: data}) for lv, data in sos.items()} | {
        "pure": make_wheel(tmp_path / "pure", tag="py3-none-any")
    }


def codes(report) -> set[str]:
    return {f.code for f in report.findings}


def test_v3_wheel_contains_v3_and_nothing_above(wheels: dict[str, Path]) -> None:
    r = inspect_wheel(wheels["v3"])
    assert [e.member for e in r.elfs] == [EXT]
    assert r.highest_level == "x86-64-v3"
    assert r.above["x86-64-v3"] == 0 and r.above["x86-64-v2"] > 0
    assert r.has_stack_label and r.local_label == "computecanada"
    assert r.file_tags == r.wheel_tags == [PLAT]
    assert r.modules == ["isafixture"]
    assert r.findings == []
    assert "libc.so.6" in r.elfs[0].isa.needed


def test_v4_wheel_contains_v4_instructions(wheels: dict[str, Path]) -> None:
    r = inspect_wheel(wheels["v4"])
    assert r.highest_level == "x86-64-v4"
    assert r.above["x86-64-v3"] > 0
    assert r.elfs[0].isa.features["AVX512F"] > 0
    text = r.text()
    assert "contains: instructions up to x86-64-v4" in text
    assert "what the code contains" in text  # contains, not requires
    assert "CONTAINS" in r.as_dict()["contains_note"] == CONTAINS_NOTE


def test_pure_tag_with_shared_library_is_flagged(tmp_path: Path, sos: dict[str, bytes]) -> None:
    w = make_wheel(tmp_path, tag="py3-none-any", files={EXT: sos["v3"]})
    r = inspect_wheel(w)
    assert "pure-tag-with-elf" in codes(r)
    assert "purelib-with-elf" in codes(r)
    assert not r.is_pure


def test_pure_wheel_is_clean(wheels: dict[str, Path]) -> None:
    r = inspect_wheel(wheels["pure"])
    assert r.is_pure and r.elfs == [] and r.findings == []
    assert r.contains == "no compiled code"


def test_platform_tag_without_elf_and_tag_disagreements(tmp_path: Path) -> None:
    r = inspect_wheel(make_wheel(tmp_path / "a", tag=PLAT))
    assert "platform-tag-without-elf" in codes(r)
    w = make_wheel(
        tmp_path / "b",
        tag="cp311-cp311-manylinux_2_17_x86_64",
        wheel_tags=("cp311-cp311-manylinux2014_x86_64",),
    )
    r = inspect_wheel(w)
    assert {"tags-mismatch", "not-site-platform"} <= codes(r)


def test_requirements_and_label(tmp_path: Path) -> None:
    w = make_wheel(
        tmp_path,
        version="2.7.0+cu126",
        tag="py3-none-any",
        requires=("numpy>=1.21", 'nvidia-cublas-cu12==12.6.4.1; platform_system == "Linux"'),
    )
    r = inspect_wheel(w)
    assert r.flagged_requirements == ['nvidia-cublas-cu12==12.6.4.1; platform_system == "Linux"']
    assert {"nvidia-requirement", "no-local-label"} <= codes(r)
    assert r.local_label == "cu126" and not r.has_stack_label
    w = make_wheel(tmp_path / "t", version="2.7.0+torch27.computecanada", tag="py3-none-any")
    assert inspect_wheel(w).has_stack_label


def test_not_a_zip_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "x-1.0-py3-none-any.whl"
    bad.write_text("<html>404</html>")
    with pytest.raises(WheelInspectError, match="not a zip archive") as info:
        inspect_wheel(bad)
    assert info.value.fix
    with pytest.raises(WheelInspectError, match="no such file"):
        inspect_wheel(tmp_path / "missing-1.0-py3-none-any.whl")


@pytest.mark.parametrize("member", ["../evil.py", "/etc/evil.py", "a/../../evil.py"])
def test_member_escaping_the_root_is_refused(tmp_path: Path, member: str) -> None:
    w = make_wheel(tmp_path, tag="py3-none-any", files={member: b"x"})
    with pytest.raises(WheelInspectError, match="escapes the wheel's root") as info:
        inspect_wheel(w)
    assert repr(member) in info.value.message


def test_cli_inspect_json(wheels: dict[str, Path]) -> None:
    result = CliRunner().invoke(app, ["inspect", str(wheels["v3"]), str(wheels["v4"]), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["highest_level"] for r in rows] == ["x86-64-v3", "x86-64-v4"]
    assert rows[1]["elfs"][0]["isa"]["above"]["x86-64-v3"] > 0
    assert rows[0]["findings"] == []


def test_cli_inspect_reports_unreadable_input_and_goes_on(
    tmp_path: Path, wheels: dict[str, Path]
) -> None:
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    result = CliRunner().invoke(app, ["inspect", str(bad), str(wheels["pure"]), "--json"])
    assert result.exit_code == 2
    rows = json.loads(result.stdout)
    assert "not a zip archive" in rows[0]["error"] and rows[1]["is_pure"]
    human = CliRunner().invoke(app, ["inspect", str(wheels["v4"])])
    assert human.exit_code == 0 and "x86-64-v4" in human.stdout


def test_place_explain_by_static_scan(
    tmp_path: Path, wheels: dict[str, Path], sos: dict[str, bytes]
) -> None:
    house = tmp_path / "house"
    v3 = explain_placement(wheels["v3"], house)
    v4 = explain_placement(wheels["v4"], house)
    pure = explain_placement(wheels["pure"], house)
    assert (v3.folder, v3.level, v3.level_source) == (
        "gentoo2023/generic",
        "generic",
        "static scan",
    )
    assert (v4.folder, v4.level) == ("gentoo2023/x86-64-v4", "x86-64-v4")
    assert pure.folder == "generic"
    assert any("statically" in r for r in v3.reasons + v4.reasons)
    unrepaired = make_wheel(tmp_path / "u", tag="py3-none-any", files={EXT: sos["v4"]})
    e = explain_placement(unrepaired, house)
    assert e.folder == "gentoo2023/x86-64-v4"  # compiled, whatever its tag says
    assert any("repair first (pure-tag-with-elf" in r for r in e.reasons)


def test_place_explain_uses_the_manifest_and_the_wheelhouse(
    tmp_path: Path, wheels: dict[str, Path]
) -> None:
    house = tmp_path / "house"
    # A v3-built wheel whose manifest says it is the x86-64-v3 level build.
    w = wheels["v3"]
    target = {"id": "gentoo2023-x86-64-v3", "stack": "gentoo2023", "level": "x86-64-v3"}
    w.with_name(w.name + ".json").write_text(json.dumps({"target": target}))
    e = explain_placement(w, house)
    assert (e.folder, e.level_source) == ("gentoo2023/x86-64-v3", "manifest")

    # A level build of the package exists: a generic copy is refused, with the reason.
    (house / "gentoo2023/x86-64-v4").mkdir(parents=True)
    shutil.copy(wheels["v4"], house / "gentoo2023/x86-64-v4")
    w.with_name(w.name + ".json").unlink()
    refused = explain_placement(w, house)
    assert refused.folder is None and "level-specific" in (refused.error or "")

    # Explaining a wheel already in its folder says so, instead of "exists".
    placed = explain_placement(house / "gentoo2023/x86-64-v4" / wheels["v4"].name, house)
    assert placed.already_there and placed.folder == "gentoo2023/x86-64-v4"


def test_cli_place_explain(tmp_path: Path, wheels: dict[str, Path]) -> None:
    house = tmp_path / "house"
    args = ["place", "--explain", str(wheels["v3"]), str(wheels["v4"]), "--wheelhouse", str(house)]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert [r["folder"] for r in json.loads(result.stdout)] == [
        "gentoo2023/generic",
        "gentoo2023/x86-64-v4",
    ]
    human = CliRunner().invoke(app, args)
    assert "-> gentoo2023/x86-64-v4/" in human.stdout
    assert CliRunner().invoke(app, ["place", str(wheels["v3"])]).exit_code == 2
