"""The cache folder's layout, in one place: every step and workflow asks here for its folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from builder.config import load_config


def default_cache() -> Path:
    """The cache folder of the configuration (cbuild.toml, then CBUILD_CACHE; builder.config)."""
    return load_config().cache.value


@dataclass(frozen=True)
class Cache:
    root: Path

    @property
    def sdists(self) -> Path:
        """Downloaded sources, by file name (checked by sha256 on every use)."""
        return self.root / "sdists"

    @property
    def sources(self) -> Path:
        """Pinned source tarballs of image layers (CPython), by file name, checked by sha256."""
        return self.root / "sources"

    @property
    def wheels(self) -> Path:
        """The wheel store: wheels fetched from an index, shared by targets and runs."""
        return self.root / "wheels"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    def lock_file(self, package: str, version: str) -> Path:
        """The last run's pinned inputs of a package version."""
        return self.locks / f"{canonicalize_name(package)}-{version}.json"

    @property
    def runs(self) -> Path:
        """Recorded runs by run key: what "up to date" is decided from."""
        return self.root / "runs"

    @property
    def work(self) -> Path:
        """Work folders of runs (logs, build outputs), a few kept per package version."""
        return self.root / "work"

    def ccache(self, target_id: str) -> Path:
        return self.root / "ccache" / target_id

    @property
    def batches(self) -> Path:
        return self.root / "batches"

    @property
    def apptainer(self) -> Path:
        return self.root / "apptainer"

    @property
    def run_folders(self) -> Path:
        """Work folders of `cbuild run` (logs, fetched wheels), a few kept."""
        return self.root / "runs-cmd"

    def shell_fetched(self, target_id: str) -> Path:
        """What `cbuild shell` had to fetch for a target, kept for its interactive container."""
        return self.root / "shell-fetched" / target_id
