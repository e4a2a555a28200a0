"""The one protocol every container engine implements (cibuildwheel's `platforms/` idea)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from builder.images.spec import ImageSpec
from builder.progress import StepProgress as Progress

# `--allow-host-network`: where an engine cannot cut steps off the network, run them with the
# host's network (each manifest records network_isolated: false) rather than fail.
ALLOW_HOST_NETWORK_ENV = "CBUILD_ALLOW_HOST_NETWORK"


@dataclass(frozen=True)
class Mount:
    host: Path
    container: str
    read_only: bool = True
    # Bind propagation ("rslave": mounts the host makes later, autofs's, appear inside).
    # Docker/Podman take it in the bind's mode; Apptainer propagates the host's by itself.
    propagation: str = ""

    @property
    def mode(self) -> str:
        """The Docker API's bind mode: `ro`/`rw`, then the propagation (`ro,rslave`)."""
        return ",".join(filter(None, ("ro" if self.read_only else "rw", self.propagation)))


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


class Engine(Protocol):
    name: str
    # False once the installation refused to cut a step off the network (then recorded).
    network_isolated: bool

    def describe(self) -> str:
        """Engine and version, for messages and manifests."""
        ...

    def image_exists(self, tag: str) -> bool: ...

    def image_id(self, tag: str) -> str: ...

    def list_images(self) -> list[dict[str, str]]:
        """cbuild's images here: rows of tag (or SIF path), id, target and spec_hash."""
        ...

    def build_image(self, spec: ImageSpec, progress: Progress) -> str:
        """Build (base included) unless an image tagged with the spec's hash exists; return tag."""
        ...

    def run(
        self,
        spec: RunSpec,
        log: Path,
        progress: Progress | None = None,
        stream: Progress | None = None,
    ) -> RunResult:
        """Run to completion in a fresh container that is always removed, output appended to log;
        `stream` gets the output line by line (newline kept) while the command runs."""
        ...

    def interactive_argv(self, spec: RunSpec, *, tty: bool) -> list[str]:
        """The engine's own command line that runs `spec` interactively (`cbuild shell`)."""
        ...

    def stop_all(self) -> int:
        """Remove the containers this engine object started and that still exist."""
        ...
