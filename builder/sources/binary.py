"""PyPI's binary wheels of a release ([source] binary_wheel): the files, and for a target the
one pip would install there: the best tag for its CPython among manylinux ones its stack's
glibc runs (and abi3, py3-none-any), never one built for a newer glibc."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import datetime

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

from builder.errors import FetchError
from builder.sources import pypi

# manylinux's old names, each the glibc it stands for (PEP 600)
_LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


@dataclass(frozen=True)
class BinaryWheel:
    filename: str
    url: str
    sha256: str
    upload_time: datetime  # timezone-aware (UTC): the repackaged wheel's zip times

    @property
    def tags(self) -> frozenset[Tag]:
        return parse_wheel_filename(self.filename)[3]


def release_wheels(name: str, version: str) -> tuple[str, list[BinaryWheel]]:
    """The project's name as PyPI spells it and the wheels of `version` (the version
    endpoint, else the project's, which some mirrors serve alone)."""
    quoted = urllib.parse.quote(name, safe="")
    page = f"{pypi.pypi_url()}/pypi/{quoted}/{urllib.parse.quote(version, safe='')}/json"
    data = pypi._get_json(page)
    files = data.get("urls", []) if data else []
    if data is None:
        page = f"{pypi.pypi_url()}/pypi/{quoted}/json"
        data = pypi._get_json(page)
        key = pypi._match_version(version, data.get("releases", {})) if data else None
        if data is None or key is None:
            raise FetchError(
                f"no version {version} of {name!r} on PyPI",
                fix="check the name ([source] pypi_name) and the version",
            )
        files = data["releases"][key]
    wheels = [
        BinaryWheel(
            f["filename"],
            urllib.parse.urljoin(page, f["url"]),
            f["digests"]["sha256"],
            datetime.fromisoformat(
                (f.get("upload_time_iso_8601") or f["upload_time"] + "Z").replace("Z", "+00:00")
            ),
        )
        for f in files
        if f.get("packagetype") == "bdist_wheel" and not f.get("yanked")
    ]
    return data["info"]["name"], wheels


def platforms(glibc: str, arch: str = "x86_64") -> list[str]:
    """manylinux platform tags a node with `glibc` runs, newest first."""
    major, minor = (int(p) for p in glibc.split(".")[:2])
    out = []
    for m in range(minor, 4, -1) if major == 2 else ():
        out.append(f"manylinux_2_{m}_{arch}")
        if m in _LEGACY:
            out.append(f"{_LEGACY[m]}_{arch}")
    return out


def accepted_tags(python: str, glibc: str, arch: str = "x86_64") -> list[Tag]:
    """The tags pip on CPython `python` ("3.11") accepts on such a node, best first."""
    version = tuple(int(p) for p in python.split(".")[:2])
    plats = platforms(glibc, arch)
    return [
        *cpython_tags(version, platforms=plats),
        *compatible_tags(version, f"cp{version[0]}{version[1]}", platforms=plats),
    ]


def pick(wheels: list[BinaryWheel], python: str, glibc: str, what: str) -> BinaryWheel:
    """The wheel pip would take for CPython `python` on a node with `glibc`."""
    rank = {tag: i for i, tag in reversed(list(enumerate(accepted_tags(python, glibc))))}
    best = min(
        ((min(rank.get(t, len(rank)) for t in w.tags), w.filename, w) for w in wheels),
        default=None,
        key=lambda x: x[:2],
    )
    if best is None or best[0] == len(rank):
        linux = [w.filename for w in wheels if "linux" in w.filename and "x86_64" in w.filename]
        shown = ", ".join(linux[:6]) or "none for Linux x86_64"
        raise FetchError(
            f"{what} has no binary wheel for CPython {python} on x86_64 with glibc {glibc}; "
            f"its wheels: {shown}",
            fix="pick a version with such a wheel, or build from the sdist (drop "
            "[source] binary_wheel)",
        )
    return best[2]
