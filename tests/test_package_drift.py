"""The image's installed packages in the manifest and `verify`'s drift, package by package
(builder.workflows.verify.package_drift; the probe itself runs in the build step's container)."""

from __future__ import annotations

import json
import subprocess
import sys

from builder.manifest import Manifest
from builder.pipeline.build import _FACTS_CODE, parse_build_facts
from builder.workflows.verify import package_drift

OLD = {
    "deb": ["libc6=2.36-9+deb12u10", "gcc-12=12.2.0-14", "zlib1g=1:1.2.13"],
    "python": ["pip=23.0.1"],
}


def test_drift_names_each_package() -> None:
    now = {
        "deb": ["libc6=2.36-9+deb12u13", "gcc-12=12.2.0-14", "libfoo1=1.0"],
        "python": ["pip=23.0.1"],
    }
    assert package_drift(OLD, now) == [
        "Debian package libc6: recorded 2.36-9+deb12u10, the rebuild's image has 2.36-9+deb12u13",
        "Debian package libfoo1 1.0: new in the image",
        "Debian package zlib1g 1:1.2.13: gone from the image",
    ]
    assert package_drift(OLD, OLD) == []


def test_old_manifests_say_not_recorded() -> None:
    old = Manifest.from_dict({"package": "x", "version": "1"})
    assert old.image_packages is None
    assert package_drift(old.image_packages, OLD) == [
        "the image's installed packages: not recorded (an older cbuild's manifest)"
    ]
    new = Manifest.from_dict({"package": "x", "image_packages": OLD})
    assert new.image_packages == OLD and "image_packages" not in new.extra
    assert json.loads(json.dumps(new.as_dict()))["image_packages"] == OLD


def test_the_probe_lists_debs_and_python_packages_as_name_equals_version() -> None:
    # The probe as the build step runs it, here with the host's python3 and dpkg.
    out = subprocess.run([sys.executable, "-c", _FACTS_CODE], capture_output=True, text=True)
    packages = parse_build_facts(out.stdout)["image_packages"]
    assert any(p.startswith("libc6=") for p in packages["deb"])
    assert any(p.startswith("packaging=") for p in packages["python"])
    assert all("=" in p for kind in ("deb", "python") for p in packages[kind])
