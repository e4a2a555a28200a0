"""One neutral, immutable description of a target image, and pure renderers for it.

hpccm's idea without its global configuration: every renderer takes the spec (made from the
target) as its argument. The Containerfile is what the Docker/Podman engine builds; the rendered
files are committed under `images/` and a test keeps them in sync.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from builder.targets.model import Target

RENDERER_VERSION = 1  # bump when rendering changes meaning without changing the spec
BASE_ARG = "BASE"
# In-container layout shared by every step (fixed paths make builds reproducible).
SRC_DIR = "/cbuild/src"
DEPS_DIR = "/cbuild/deps"
OUT_DIR = "/cbuild/out"
BUILD_ENV = "/cbuild/buildenv"
TEST_ENV = "/cbuild/testenv"
QEMU_PATH = "/cbuild/qemu/qemu-x86_64"


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


def spec_for(target: Target, extra_packages: tuple[str, ...] = ()) -> ImageSpec:
    """The target's image; a recipe's system packages make an image of their own (a different
    definition, so a different hash and tag)."""
    prov = target.stack.providers["standalone"]
    env = {
        **target.compiler_flags(),
        "CBUILD_TARGET": target.id,
        "CBUILD_CPU_LEVEL": target.cpu_level.name,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LC_ALL": "C.UTF-8",
    }
    labels = {
        "org.cbuild.target": target.id,
        "org.cbuild.stack": target.stack.name,
        "org.cbuild.provider": "standalone",
        "org.cbuild.python": target.python,
    }
    return ImageSpec(
        name=target.id,
        base=BaseImage(prov["base_image"], prov["distribution"], prov["suite"]),
        packages=(*prov["apt_packages"], *sorted(set(extra_packages) - set(prov["apt_packages"]))),
        env=tuple(sorted(env.items())),
        labels=tuple(sorted(labels.items())),
        steps=(f"mkdir -p {SRC_DIR} {DEPS_DIR} {OUT_DIR}",),
    )


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


def rendered_files(targets: list[Target]) -> dict[str, str]:
    """Relative path -> text of every committed image definition (`images/<target>/...`)."""
    from builder.images.apptainer import DEF_NAME, render_apptainer  # it imports this module

    out = {}
    for t in targets:
        out[f"{t.id}/Containerfile"] = render_containerfile(spec_for(t))
        out[f"{t.id}/{DEF_NAME}"] = render_apptainer(spec_for(t))
    return out
