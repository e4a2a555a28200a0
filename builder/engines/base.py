"""The one protocol every container engine implements (cibuildwheel's `platforms/` idea)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from builder.images.spec import ImageSpec


@dataclass(frozen=True)
class Mount:
    host: Path
    container: str
    read_only: bool = True


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str  # stdout and stderr together, as the log keeps them

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class RunSpec:
    image: str
    command: list[str]
    mounts: tuple[Mount, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    network: bool = False  # off unless a step must fetch
    workdir: str = "/"


Progress = Callable[[str], None]


class Engine(Protocol):
    name: str

    def describe(self) -> str:
        """Engine and version, for messages and manifests."""
        ...

    def image_exists(self, tag: str) -> bool: ...

    def image_id(self, tag: str) -> str: ...

    def build_image(self, spec: ImageSpec, progress: Progress) -> str:
        """Build (base included) unless an image tagged with the spec's hash exists; return tag."""
        ...

    def run(self, spec: RunSpec, log: Path, progress: Progress | None = None) -> RunResult:
        """Run to completion in a fresh container that is always removed, output appended to log."""
        ...

    def stop_all(self) -> int:
        """Remove the containers this engine object started and that still exist."""
        ...
