"""builder.wheels.edit and `cbuild wheel-edit` on real wheels: one built here by setuptools from a
small project (no sdist), and (network) ruamel.yaml.clib's binary wheels from PyPI, whose older
releases spell the dist-info folder with dots. Every edited wheel is checked against its RECORD
and installed by pip."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from builder.wheels.edit import (
    WheelEditError,
    WheelEdits,
    edit_requirements,
    edit_wheel,
    new_version,
)

REPO = Path(__file__).resolve().parent.parent
REQUIRES = [
    'numpy>=1.21; python_version < "3.14"',
    "nvidia-cublas-cu12==12.1.3.1",
    "torch>=2.1",
    'scipy[all]>=1.10; extra == "full"',
]


def build_wheel(dest: Path, name: str = "acme.tools-core", version: str = "1.2.0") -> Path:
    """A real wheel from setuptools: a package, a module, data, a console script, requirements."""
    pytest.importorskip("setuptools")
    proj = dest / "proj"
    (proj / "acme_tools").mkdir(parents=True)
    (proj / "acme_tools" / "__init__.py").write_text("VALUE = 42\n")
    (proj / "acme_tools" / "data.txt").write_text("payload\n")
    reqs = ", ".join(json.dumps(r) for r in REQUIRES[:3])
    (proj / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "A small wheel for wheel-edit tests"
dependencies = [{reqs}]

[project.optional-dependencies]
full = ["scipy[all]>=1.10"]

[project.scripts]
acme-tool = "acme_tools:VALUE"

[tool.setuptools.package-data]
acme_tools = ["data.txt"]
"""
    )
    out = dest / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "-w", str(out), str(proj)],
        check=True,
        capture_output=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
    )
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("build"))


@pytest.fixture
def wheel(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "wh" / built.name
    copy.parent.mkdir()
    copy.write_bytes(built.read_bytes())
    return copy


def check_record(path: Path) -> dict[str, str]:
    """Every file of the wheel is in RECORD once with its true hash and size; returns the
    dist-info folder's METADATA and the folder name."""
    with zipfile.ZipFile(path) as zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
        rows = list(csv.reader(io.StringIO(zf.read(record).decode())))
        assert sorted(r[0] for r in rows) == sorted(names)
        for n, h, size in rows:
            if n == record:
                assert (h, size) == ("", "")
                continue
            data = zf.read(n)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert h == "sha256=" + digest.decode(), n
            assert int(size) == len(data), n
        info = record.split("/")[0]
        return {"info": info, "METADATA": zf.read(f"{info}/METADATA").decode()}


def pip_install(wheel: Path, target: Path, dist: str) -> dict[str, object]:
    """Install with pip (no deps) and read the installed metadata back."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
        + ["--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import importlib.metadata as m, json, sys; sys.path.insert(0, sys.argv[1]); "
        "d = m.distribution(sys.argv[2]); "
        "print(json.dumps({'version': d.version, 'requires': d.requires, 'name': d.name}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(target), dist], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def requires(text: str) -> list[str]:
    return [ln.split(": ", 1)[1] for ln in text.splitlines() if ln.startswith("Requires-Dist: ")]


# --- pure parts ---------------------------------------------------------------------------------


def test_requirement_edits_keep_markers_and_extras() -> None:
    values, changes, notes = edit_requirements(
        REQUIRES,
        WheelEdits(
            remove=("nvidia-*-cu12",),
            update=("numpy<2", "torch->torch-cpu", "scipy->scipy-lite", "absent>=1"),
            add=("packaging>=24",),
        ),
    )
    assert values == [
        'numpy<2; python_version < "3.14"',  # the marker kept
        "torch-cpu>=2.1",  # renamed, specifier kept
        'scipy-lite[all]>=1.10; extra == "full"',  # extras and marker kept
        "packaging>=24",
    ]
    assert "removed Requires-Dist: nvidia-cublas-cu12==12.1.3.1" in changes
    assert notes == ["no requirement on 'absent' to update"]
    # A rename with its own specifier and marker uses them.
    values, _, _ = edit_requirements(
        ["torch>=2"], WheelEdits(update=("torch->torch-cpu==2.7; os_name == 'posix'",))
    )
    assert values == ['torch-cpu==2.7; os_name == "posix"']


def test_adding_an_existing_requirement_is_refused() -> None:
    with pytest.raises(WheelEditError, match="already requires 'torch>=2.1'"):
        edit_requirements(REQUIRES, WheelEdits(add=("Torch",)))
    # The same name under another marker is a different requirement.
    values, _, _ = edit_requirements(["torch>=2.1"], WheelEdits(add=("torch; extra == 'gpu'",)))
    assert values == ["torch>=2.1", 'torch; extra == "gpu"']


def test_new_version_puts_tags_first_and_the_label_last() -> None:
    assert new_version("1.2.0", label="computecanada") == "1.2.0+computecanada"
    assert new_version("1.2.0+computecanada", ("torch27",)) == "1.2.0+torch27.computecanada"
    assert (
        new_version("2.1+cu121", ("torch27",), "computecanada") == "2.1+torch27.cu121.computecanada"
    )
    assert (
        new_version("1.0+computecanada", (), "computecanada") == "1.0+computecanada"
    )  # idempotent
    assert new_version("1.0+torch27.computecanada", ("torch27",), "computecanada") == (
        "1.0+torch27.computecanada"
    )


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        (WheelEdits(add=("torch>=",)), "invalid requirement 'torch>='"),
        (WheelEdits(remove=("torch>=2",)), "not a project name or name pattern"),
        (WheelEdits(update=("a b->c",)), "'a b' in 'a b->c' is not a project name"),
        (WheelEdits(tags=("torch-2",)), "must be letters and digits"),
    ],
)
def test_bad_edits_are_refused_before_reading_a_wheel(edits: WheelEdits, message: str) -> None:
    with pytest.raises(WheelEditError, match=message):
        edits.check()


# --- real wheels --------------------------------------------------------------------------------


def test_edit_in_place_keeps_record_valid_and_installs(wheel: Path, tmp_path: Path) -> None:
    before = check_record(wheel)
    result = edit_wheel(
        wheel,
        WheelEdits(
            remove=("nvidia-*",),
            update=("numpy<2",),
            add=("packaging>=24",),
            tags=("torch27",),
            label="computecanada",
        ),
    )
    # The name as this setuptools spells it (acme.tools_core or acme_tools_core), kept.
    dist = wheel.name.split("-")[0]
    new = wheel.parent / f"{dist}-1.2.0+torch27.computecanada-py3-none-any.whl"
    assert result.path == new and sorted(wheel.parent.iterdir()) == [new]  # the old one is gone
    after = check_record(new)
    assert after["info"] == f"{dist}-1.2.0+torch27.computecanada.dist-info"
    # Edited where they stand (setuptools' order varies by version), the addition last.
    assert sorted(requires(after["METADATA"])[:-1]) == [
        'numpy<2; python_version < "3.14"',
        'scipy[all]>=1.10; extra == "full"',
        "torch>=2.1",
    ]
    assert requires(after["METADATA"])[-1] == "packaging>=24"
    lines = after["METADATA"].splitlines()
    assert lines[lines.index("Provides-Extra: full") + 1].startswith("Requires-Dist: scipy[all]")
    # Every other METADATA line is byte-identical.
    strip = [ln for ln in before["METADATA"].splitlines() if not ln.startswith(("Version", "Req"))]
    assert strip == [
        ln for ln in after["METADATA"].splitlines() if not ln.startswith(("Version", "Req"))
    ]
    installed = pip_install(new, tmp_path / "site", "acme.tools-core")
    assert installed["version"] == "1.2.0+torch27.computecanada"
    assert "packaging>=24" in installed["requires"]
    assert not any("nvidia" in r for r in installed["requires"])
    assert (tmp_path / "site" / "acme_tools" / "data.txt").read_text() == "payload\n"


def test_edit_is_deterministic_and_keeps_entry_times(wheel: Path, tmp_path: Path) -> None:
    edits = WheelEdits(add=("packaging",), label="computecanada")
    a = edit_wheel(wheel, edits, tmp_path / "a").path
    b = edit_wheel(wheel, edits, tmp_path / "b").path
    assert a.read_bytes() == b.read_bytes()
    assert wheel.exists()  # --out: the original is untouched
    with zipfile.ZipFile(wheel) as old, zipfile.ZipFile(a) as new:
        times = {i.filename.split("/")[-1]: i.date_time for i in old.infolist()}
        assert all(times[i.filename.split("/")[-1]] == i.date_time for i in new.infolist())


def test_nothing_to_do_writes_nothing(wheel: Path) -> None:
    stat = wheel.stat()
    result = edit_wheel(wheel, WheelEdits(remove=("absent",)))
    assert result.path == wheel and result.changes == []
    assert result.notes == ["no requirement matches 'absent' to remove"]
    assert wheel.stat().st_mtime_ns == stat.st_mtime_ns


def test_failure_while_writing_keeps_the_original(
    wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = wheel.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        edit_wheel(wheel, WheelEdits(label="computecanada"))
    assert sorted(wheel.parent.iterdir()) == [wheel]  # no temporary file left either
    assert wheel.read_bytes() == data


def test_an_existing_wheel_is_not_replaced_without_force(wheel: Path) -> None:
    taken = wheel.parent / wheel.name.replace("-1.2.0-", "-1.2.0+computecanada-")
    taken.write_bytes(b"another wheel")
    with pytest.raises(WheelEditError, match="already exists") as exc:
        edit_wheel(wheel, WheelEdits(label="computecanada"))
    assert "--force" in (exc.value.fix or "")
    assert wheel.exists() and taken.read_bytes() == b"another wheel"
    edit_wheel(wheel, WheelEdits(label="computecanada"), force=True)
    check_record(taken)
    assert not wheel.exists()


def test_suffix_renames_the_distribution(wheel: Path, tmp_path: Path) -> None:
    result = edit_wheel(wheel, WheelEdits(suffix="-gpu"))
    dist = wheel.name.split("-")[0]  # escaped as this wheel escapes its name
    assert result.path.name == f"{dist}_gpu-1.2.0-py3-none-any.whl"
    after = check_record(result.path)
    assert after["info"] == f"{dist}_gpu-1.2.0.dist-info"
    assert "Name: acme.tools-core-gpu\n" in after["METADATA"]
    assert pip_install(result.path, tmp_path / "site", "acme-tools-core-gpu")["version"] == "1.2.0"


def test_manifest_beside_the_wheel_follows_it(wheel: Path) -> None:
    manifest = wheel.with_name(wheel.name + ".json")
    manifest.write_text(json.dumps({"wheel": wheel.name, "sha256": "x", "target": {"id": "t"}}))
    result = edit_wheel(wheel, WheelEdits(label="computecanada"))
    moved = result.path.with_name(result.path.name + ".json")
    assert not manifest.exists()
    data = json.loads(moved.read_text())
    assert data["wheel"] == result.path.name and data["target"] == {"id": "t"}
    assert data["sha256"] == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert data["edits"] == [result.changes]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "builder", *args], capture_output=True, text=True, cwd=REPO
    )


def test_cli_edits_several_wheels_and_reports_each(wheel: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-1.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    res = cli(
        "wheel-edit", str(wheel), str(broken), "--remove-req", "nvidia-*",
        "--update-req", "torch->torch-cpu", "--local-label", "computecanada", "--json",
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    ok, bad = json.loads(res.stdout)
    assert ok["changed"] and ok["result"].endswith("1.2.0+computecanada-py3-none-any.whl")
    assert "Requires-Dist: torch>=2.1 -> torch-cpu>=2.1" in ok["changes"]
    assert "broken-1.0-py3-none-any.whl" in bad["error"]
    assert "torch-cpu>=2.1" in requires(check_record(Path(ok["result"]))["METADATA"])

    res = cli("wheel-edit", ok["result"], "--add-req", "torch-cpu")
    assert res.returncode == 2 and "already requires 'torch-cpu>=2.1'" in res.stderr
    assert "--update-req" in res.stderr
    res = cli("wheel-edit", ok["result"])
    assert res.returncode == 2 and "no edit given" in res.stderr


@pytest.fixture(scope="module")
def ruamel_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ruamel.yaml.clib binary wheels for CPython 3.11: 0.2.8 names its dist-info
    `ruamel.yaml.clib-0.2.8.dist-info`, 0.2.15 `ruamel_yaml_clib-0.2.15.dist-info`."""
    dest = tmp_path_factory.mktemp("ruamel")
    for v in ("0.2.8", "0.2.15"):
        res = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
            + ["--python-version", "3.11", "--platform", "manylinux2014_x86_64"]
            + ["--implementation", "cp", "-d", str(dest), f"ruamel.yaml.clib=={v}"],
            capture_output=True,
            text=True,
        )
        if res.returncode:
            pytest.skip(f"PyPI unreachable: {res.stderr[-300:]}")
    return {w.name.split("-")[1]: w for w in dest.glob("*.whl")}


@pytest.mark.network
@pytest.mark.parametrize("version", ["0.2.8", "0.2.15"])
def test_dotted_names_keep_their_dist_info_name(
    ruamel_wheels: dict[str, Path], tmp_path: Path, version: str
) -> None:
    src = ruamel_wheels[version]
    dist = src.name.split("-")[0]  # ruamel.yaml.clib or ruamel_yaml_clib, as the wheel has it
    info = check_record(src)["info"]
    assert info == f"{dist}-{version}.dist-info"
    result = edit_wheel(
        src,
        WheelEdits(add=("ruamel.yaml>=0.17",), tags=("py311",), label="computecanada"),
        tmp_path,
    )
    assert result.path.name.startswith(f"{dist}-{version}+py311.computecanada-cp311-cp311-")
    after = check_record(result.path)
    assert after["info"] == f"{dist}-{version}+py311.computecanada.dist-info"
    assert "Name: ruamel.yaml.clib\n" in after["METADATA"]
    assert requires(after["METADATA"])[-1] == "ruamel.yaml>=0.17"
    installed = pip_install(result.path, tmp_path / "site", "ruamel.yaml.clib")
    assert installed["version"] == f"{version}+py311.computecanada"
    assert installed["requires"] == ["ruamel.yaml>=0.17"]
    # The compiled extension came through byte for byte.
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(result.path) as b:
        so = [n for n in a.namelist() if n.endswith(".so")]
        assert so and all(a.read(n) == b.read(n) for n in so)
