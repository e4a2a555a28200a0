"""The image spec rendered as an Apptainer definition: pure functions of the spec.

The same model as the Containerfile (builder.images.spec), with Apptainer's semantics minded:
- `%environment` applies at run time only, like the Containerfile's ENV lines that follow its
  RUN lines: neither build reads them, and the pipeline hands every step its build environment
  (CFLAGS, SOURCE_DATE_EPOCH, ...) explicitly, so both engines run a step with the same env;
- `%post` is one shell (`set -e` there, like each RUN's `&&` chain), run after the packages;
- no `%files`: nothing is copied in; the Containerfile has no COPY either.

`render_apptainer` gives the self-contained definition committed under `images/<target>/`
(what a person builds by hand). The engine builds the same content in two stages, so that the
targets share one base SIF the way Docker shares a layer: `render_base_stage` (bootstrap and
packages) and `render_target_stage` (the target's steps, environment and labels on top of it).
"""

from __future__ import annotations

import hashlib
import shlex

from builder.images.paths import APPTAINER_INPUTS_DIR, INPUTS_DIR
from builder.images.spec import BaseImage, ImageSpec

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEF_NAME = "apptainer.def"


def docker_header(base: BaseImage) -> str:
    """Where a registry answers: the same base as the Containerfile's default."""
    return f"Bootstrap: docker\nFrom: {base.ref}\n"


def debootstrap_header(base: BaseImage, mirror: str = DEFAULT_MIRROR) -> str:
    """Where none does: the same suite from Debian's mirror (debootstrap's minbase variant, as
    the Docker engine's mmdebstrap bootstrap)."""
    if base.distribution != "debian":
        raise ValueError(f"no debootstrap bootstrap for {base.distribution}")
    return f"Bootstrap: debootstrap\nOSVersion: {base.suite}\nMirrorURL: {mirror}\n"


def localimage_header(sif: str) -> str:
    return f"Bootstrap: localimage\nFrom: {sif}\n"


def _packages_post(spec: ImageSpec) -> list[str]:
    return [
        "    apt-get update",
        "    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\",
        *(f"       {p} \\" for p in spec.packages[:-1]),
        f"       {spec.packages[-1]}",
        "    rm -rf /var/lib/apt/lists/*",
    ]


def _layers_post(spec: ImageSpec) -> list[str]:
    return [f"    {line}" for layer in spec.layers for line in layer.script]


def _files(spec: ImageSpec, where: dict[str, str] | None = None) -> list[str]:
    """The layers' input files (`where`: file name -> its path for the build; default the
    bare name, beside the definition), copied in before %post runs."""
    if not spec.inputs:
        return []
    where = where or {}
    rows = [f"    {where.get(s.file, s.file)} {APPTAINER_INPUTS_DIR}/{s.file}" for s in spec.inputs]
    return ["%files", *rows, ""]


def _inputs_post(spec: ImageSpec) -> list[str]:
    """%files' copies moved where the layers' scripts read them (see APPTAINER_INPUTS_DIR)."""
    if not spec.inputs:
        return []
    src, dest = APPTAINER_INPUTS_DIR, INPUTS_DIR
    return [f"    mkdir -p {dest} && mv {src}/* {dest}/ && rmdir {src}"]


def _steps_post(spec: ImageSpec) -> list[str]:
    return [f"    {s}" for s in spec.steps]


def _environment(spec: ImageSpec) -> list[str]:
    return ["%environment", *(f"    export {k}={shlex.quote(v)}" for k, v in spec.env)]


def _labels(spec: ImageSpec) -> list[str]:
    return [
        "%labels",
        *(f"    {k} {v}" for k, v in spec.labels),
        f"    org.cbuild.spec-hash {spec.hash}",
    ]


def _comment(spec: ImageSpec, what: str) -> list[str]:
    return [
        f"# Rendered by cbuild from the image spec of {spec.name} ({what});",
        "# `cbuild images render` rewrites it.",
        f"# spec hash {spec.hash}",
    ]


def render_apptainer(spec: ImageSpec, header: str | None = None) -> str:
    """One definition with everything: bootstrap, packages, steps, environment, labels."""
    return "\n".join(
        [
            *_comment(spec, "Apptainer definition"),
            # spython's parser rejects any line naming a non-docker header, comments too.
            "# No registry? README, section Apptainer, gives the header for Debian's mirror.",
            (header or docker_header(spec.base)).rstrip("\n"),
            "",
            *_files(spec),
            "%post",
            "    set -e",
            *_inputs_post(spec),
            *_packages_post(spec),
            *_layers_post(spec),
            *_steps_post(spec),
            "",
            *_environment(spec),
            "",
            *_labels(spec),
            "",
        ]
    )


def base_stage_key(spec: ImageSpec, header: str) -> str:
    """What the base stage depends on: its header, the packages and the shared layers (a
    Python built from source), not the target."""
    layers = f"\n{spec.layers}" if spec.layers else ""  # as before layers existed
    return hashlib.sha256(f"{header}\n{spec.packages}{layers}".encode()).hexdigest()[:16]


def render_base_stage(spec: ImageSpec, header: str, inputs: dict[str, str] | None = None) -> str:
    """Stage 1, shared by every target with the same base, packages and layers; `inputs`:
    where the build finds each layer input file."""
    return "\n".join(
        [
            f"# cbuild base stage for {spec.base.ref} with {len(spec.packages)} packages"
            + "".join(f", layer {layer.name}" for layer in spec.layers),
            header.rstrip("\n"),
            "",
            *_files(spec, inputs),
            "%post",
            "    set -e",
            *_inputs_post(spec),
            *_packages_post(spec),
            *_layers_post(spec),
            "",
        ]
    )


def render_target_stage(spec: ImageSpec, base_sif: str) -> str:
    """Stage 2: the target's steps, environment and labels on the base stage's SIF."""
    return "\n".join(
        [
            *_comment(spec, "engine stage 2"),
            localimage_header(base_sif).rstrip("\n"),
            "",
            "%post",
            "    set -e",
            *_steps_post(spec),
            "",
            *_environment(spec),
            "",
            *_labels(spec),
            "",
        ]
    )


def definition_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
