"""Import names from the files a wheel holds, with top_level.txt only as a cross-check."""

from __future__ import annotations

import zipfile
from pathlib import Path

from builder.wheels.contents import import_names

SO = ".cpython-311-x86_64-linux-gnu.so"


def wheel(tmp: Path, files: dict[str, str], top_level: str | None = None) -> Path:
    path = tmp / "pkg-1.0-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr("pkg-1.0.dist-info/METADATA", "Name: pkg\nVersion: 1.0\n")
        if top_level is not None:
            zf.writestr("pkg-1.0.dist-info/top_level.txt", top_level)
        zf.writestr("pkg-1.0.dist-info/RECORD", "")
    return path


def test_packages_modules_extensions(tmp_path: Path) -> None:
    got = import_names(
        wheel(
            tmp_path,
            {
                "pkg/__init__.py": "",
                "pkg/_speedups" + SO: "",
                "mod.py": "",
                "fast.abi3.so": "",
                "_private" + SO: "",  # compiled code of the wheel: imported
                "_hook.py": "",  # private pure Python: not while there is something else
                "pkg.libs/libz.so.1": "",  # auditwheel's folder: nothing importable
                "libfoo.so": "",  # a plain shared library, not an extension module
                "pkg-1.0.data/purelib/extra/__init__.py": "",
                "pkg-1.0.data/scripts/tool": "",
                "pkg-1.0.data/headers/x.h": "",
                "pkg/__pycache__/x.cpython-311.pyc": "",
                "tests/__init__.py": "",  # left out: shipped by accident
            },
        )
    )
    assert got.names == ("_private", "extra", "fast", "mod", "pkg")
    assert got.top_level_txt is None and got.disagreement is None
    assert "tests" in got.held


def test_namespace_package_imports_what_it_holds(tmp_path: Path) -> None:
    got = import_names(
        wheel(
            tmp_path,
            {
                "ruamel/yaml/clib/__init__.py": "",
                "google/protobuf/__init__.py": "",
                "google/_upb/_message.abi3.so": "",
                "docs/index.txt": "",  # a folder with nothing importable
            },
        )
    )
    assert got.names == ("google._upb._message", "google.protobuf", "ruamel.yaml.clib")


def test_top_level_txt_naming_a_namespace_the_wheel_lacks(tmp_path: Path) -> None:
    # The reported case: top_level.txt says `ns`, the wheel holds only `_ns_impl`.
    got = import_names(wheel(tmp_path, {"_ns_impl" + SO: ""}, top_level="ns\n"))
    assert got.names == ("_ns_impl",)
    assert got.disagreement == (
        "top_level.txt names ns, which the wheel does not hold and leaves out _ns_impl, "
        "which the wheel holds"
    )


def test_top_level_txt_agreeing(tmp_path: Path) -> None:
    got = import_names(
        wheel(tmp_path, {"Bio/__init__.py": "", "BioSQL/__init__.py": ""}, "Bio\nBioSQL\n")
    )
    assert got.names == ("Bio", "BioSQL") and got.disagreement is None


def test_only_private_pure_python_is_still_imported(tmp_path: Path) -> None:
    got = import_names(wheel(tmp_path, {"_distutils_hack/__init__.py": ""}))
    assert got.names == ("_distutils_hack",)


def test_nothing_importable(tmp_path: Path) -> None:
    got = import_names(wheel(tmp_path, {"pkg-1.0.data/scripts/tool": "", "tests/__init__.py": ""}))
    assert got.names == ()
