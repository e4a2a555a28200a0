"""One neutral, immutable description of a target image, and its Containerfile renderer.

hpccm's idea without its global configuration: every renderer takes the spec as its argument.
A target's provider makes its spec (builder.providers); the Containerfile is what the
Docker/Podman engine builds (the committed copies: builder.images.render).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from builder.images.paths import INPUTS_DIR

RENDERER_VERSION = 1  # bump when rendering changes meaning without changing the spec
BASE_ARG = "BASE"


@dataclass(frozen=True)
class BaseImage:
    ref: str  # what a registry would serve
    distribution: str  # for the bootstrap path: mmdebstrap SUITE
    suite: str

    @property
    def local_tag(self) -> str:
        """Where cbuild keeps the base, pulled or bootstrapped, under one name."""
        return f"localhost/cbuild-base:{self.distribution}-{self.suite}"


@dataclass(frozen=True)
class SourceFile:
    """One input file pinned by sha256 and the mirrors that serve it (all the same bytes);
    builder.images.python finds or fetches it on the host."""

    file: str
    sha256: str
    mirrors: tuple[str, ...]


@dataclass(frozen=True)
class Layer:
    """Built once and shared by every image with the same base and packages (the level never
    enters it): a Docker layer the engine's cache reuses, part of Apptainer's base stage.
    Its input files are copied to INPUTS_DIR first (the engines' build context)."""

    name: str  # "python3.13"
    script: tuple[str, ...]  # shell lines, run as one
    inputs: tuple[SourceFile, ...] = ()


@dataclass(frozen=True)
class ImageSpec:
    name: str  # target id
    base: BaseImage
    packages: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    steps: tuple[str, ...] = field(default=())  # shell run once at build time, after packages
    layers: tuple[Layer, ...] = ()  # after the packages, before the steps; shared by levels

    @property
    def hash(self) -> str:
        # Fields at their defaults stay out: images defined before them keep their hash.
        data = {k: v for k, v in asdict(self).items() if v or k != "layers"}
        payload = json.dumps([RENDERER_VERSION, data], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def inputs(self) -> tuple[SourceFile, ...]:
        """Files the layers copy in: the engine sends them with the definition."""
        return tuple(src for layer in self.layers for src in layer.inputs)

    @property
    def tag(self) -> str:
        return f"localhost/cbuild/{self.name}:{self.hash}"


def render_containerfile(spec: ImageSpec) -> str:
    lines = [
        f"# Rendered by cbuild from the image spec of {spec.name};",
        "# `cbuild images render` rewrites it.",
        f"# spec hash {spec.hash}",
        f"ARG {BASE_ARG}={spec.base.ref}",
        f"FROM ${{{BASE_ARG}}}",
        "RUN apt-get update \\",
        "    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\",
        *(f"       {p} \\" for p in spec.packages),
        "    && rm -rf /var/lib/apt/lists/*",
        *(line for layer in spec.layers for line in render_layer(layer)),
        *(f"RUN {s}" for s in spec.steps),
        *(f"ENV {k}={json.dumps(v)}" for k, v in spec.env),
        *(f"LABEL {k}={json.dumps(v)}" for k, v in spec.labels),
        f'LABEL org.cbuild.spec-hash="{spec.hash}"',
        "",
    ]
    return "\n".join(lines)


def render_layer(layer: Layer) -> list[str]:
    """COPY of the inputs (from the build context: files named as pinned), then one RUN."""
    body = " \\\n    ".join(f"{line};" if line != "set -e" else "set -e;" for line in layer.script)
    return [
        f"# layer {layer.name}: shared by every level of the stack",
        *(f"COPY {src.file} {INPUTS_DIR}/{src.file}" for src in layer.inputs),
        f"RUN {body.rstrip(';')}",
    ]
