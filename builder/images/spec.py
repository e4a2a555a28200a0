"""One neutral, immutable description of a target image, and its Containerfile renderer.

hpccm's idea without its global configuration: every renderer takes the spec as its argument.
A target's provider makes its spec (builder.providers); the Containerfile is what the
Docker/Podman engine builds (the committed copies: builder.images.render).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

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
class ImageSpec:
    name: str  # target id
    base: BaseImage
    packages: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    steps: tuple[str, ...] = field(default=())  # shell run once at build time, after packages

    @property
    def hash(self) -> str:
        payload = json.dumps([RENDERER_VERSION, asdict(self)], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

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
        *(f"RUN {s}" for s in spec.steps),
        *(f"ENV {k}={json.dumps(v)}" for k, v in spec.env),
        *(f"LABEL {k}={json.dumps(v)}" for k, v in spec.labels),
        f'LABEL org.cbuild.spec-hash="{spec.hash}"',
        "",
    ]
    return "\n".join(lines)
