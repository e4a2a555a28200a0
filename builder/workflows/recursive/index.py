"""The package index the recursive planner chooses versions from: a protocol, and PyPI's
JSON API behind it."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from builder.cache import Cache
from builder.sources import pypi
from builder.workflows.recursive.requires import Requires, sdist_requires


@dataclass(frozen=True)
class Candidate:
    name: str  # as the index spells it
    version: str
    requires_python: str | None


class Index(Protocol):
    def releases(self, name: str) -> list[Candidate]:
        """Every version of `name` with an sdist that is not yanked; [] for no such project."""
        ...

    def requires(self, name: str, version: str) -> Requires: ...


class PyPIIndex:
    """PyPI's JSON API (CBUILD_PYPI_URL); sdists land in the cache the pipeline reads them from,
    so a planned dependency is downloaded once."""

    def __init__(self, cache_dir: Path) -> None:
        self.sdists = Cache(cache_dir).sdists

    def releases(self, name: str) -> list[Candidate]:
        data = pypi._get_json(f"{pypi.pypi_url()}/pypi/{urllib.parse.quote(name, safe='')}/json")
        if data is None:
            return []
        out = []
        for version, files in data.get("releases", {}).items():
            sdists = [f for f in files if f.get("packagetype") == "sdist" and not f.get("yanked")]
            if sdists:
                out.append(
                    Candidate(data["info"]["name"], version, sdists[0].get("requires_python"))
                )
        return out

    def requires(self, name: str, version: str) -> Requires:
        release = pypi.release_info(name, version)
        return sdist_requires(pypi.download(release.sdist_url, release.sdist_sha256, self.sdists))
