"""The Apptainer rendering of the image spec, and the engine's pure checks (no Apptainer needed).

The committed definitions are parsed with spython's Singularity parser, and compared with the
Containerfiles: the same packages, steps, environment and labels in both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from spython.main.parse.parsers import SingularityParser

from builder.engines.apptainer import (
    MIN_VERSION,
    check_version,
    failing_section,
    parse_version,
    registry_host,
    subuid_fix,
)
from builder.errors import EngineError
from builder.images.apptainer import (
    DEF_NAME,
    debootstrap_header,
    definition_hash,
    docker_header,
    render_apptainer,
    render_base_stage,
    render_target_stage,
)
from builder.images.render import rendered_files
from builder.providers import spec_for
from builder.targets.model import all_targets

REPO = Path(__file__).resolve().parent.parent


def recipe_of(path: Path):
    return SingularityParser(str(path)).recipe["spython-base"]


@pytest.mark.parametrize("target", all_targets(), ids=lambda t: t.id)
def test_committed_definition_parses_with_every_section_of_the_spec(target) -> None:
    path = REPO / "images" / target.id / DEF_NAME
    assert path.read_text() == rendered_files([target])[f"{target.id}/{DEF_NAME}"], (
        f"{path} drifted: run `cbuild images render`"
    )
    spec = spec_for(target)
    rec = recipe_of(path)
    assert rec.fromHeader == spec.base.ref
    post = "\n".join(rec.install)
    assert all(re.search(rf"^{re.escape(p)}\b", post, re.M) for p in spec.packages)
    assert all(step in rec.install for step in spec.steps)
    env = dict(line.split("=", 1) for line in rec.environ)
    assert {k: v.strip("'") for k, v in env.items()} == dict(spec.env)
    labels = dict(line.split(" ", 1) for line in rec.labels)
    assert labels == {**dict(spec.labels), "org.cbuild.spec-hash": spec.hash}


@pytest.mark.parametrize("target", all_targets(), ids=lambda t: t.id)
def test_containerfile_and_definition_mean_the_same(target) -> None:
    folder = REPO / "images" / target.id
    cf = (folder / "Containerfile").read_text()
    rec = recipe_of(folder / DEF_NAME)
    cf_env = dict(re.findall(r"^ENV (\w+)=(.*)$", cf, re.M))
    cf_labels = dict(re.findall(r"^LABEL ([\w.-]+)=(.*)$", cf, re.M))
    def_env = dict(line.split("=", 1) for line in rec.environ)
    assert {k: json.loads(v) for k, v in cf_env.items()} == {
        k: v.strip("'") for k, v in def_env.items()
    }
    assert {k: json.loads(v) for k, v in cf_labels.items()} == dict(
        line.split(" ", 1) for line in rec.labels
    )
    cf_packages = re.findall(r"^ {7}(\S+) \\$", cf, re.M)
    assert cf_packages == list(spec_for(target).packages)
    assert (
        "FROM ${BASE}" in cf
        and f"From: {spec_for(target).base.ref}" in (folder / DEF_NAME).read_text()
    )


def test_engine_stages_add_up_to_the_committed_definition() -> None:
    """The engine builds base + target stages; together they run the same %post, in order."""
    spec = spec_for(all_targets()[1])

    def post(text: str) -> list[str]:
        body = text.split("%post\n", 1)[1].split("\n\n", 1)[0]
        return [ln.strip() for ln in body.splitlines() if ln.strip() != "set -e"]

    header = debootstrap_header(spec.base)
    base = render_base_stage(spec, header)
    target = render_target_stage(spec, "/sifs/base.sif")
    full = render_apptainer(spec, header)
    assert post(base) + post(target) == post(full)
    assert base.count("Bootstrap: debootstrap") == 1 and "MirrorURL: http://deb.debian.org" in base
    assert "Bootstrap: localimage\nFrom: /sifs/base.sif\n" in target
    for section in ("%environment", "%labels"):
        assert full.split(section, 1)[1] == target.split(section, 1)[1]
    assert "%environment" not in base  # run-time env belongs to the target stage alone


def test_definition_hash_follows_the_text_only() -> None:
    a, b = (spec_for(t) for t in all_targets()[:2])
    sif = "/sifs/base.sif"
    assert definition_hash(render_target_stage(a, sif)) == definition_hash(
        render_target_stage(spec_for(all_targets()[0]), sif)
    )
    assert definition_hash(render_target_stage(a, sif)) != definition_hash(
        render_target_stage(b, sif)
    )
    assert docker_header(a.base) != debootstrap_header(a.base)


def test_environment_is_shell_quoted() -> None:
    spec = spec_for(all_targets()[2])
    text = render_apptainer(spec)
    assert "    export CFLAGS='-O2 -march=x86-64-v4 -mtune=generic'" in text
    assert "    export LDFLAGS=-Wl,-z,x86-64-v4" in text


def test_version_check_names_the_version_needed() -> None:
    need = ".".join(map(str, MIN_VERSION))
    assert parse_version("apptainer version 1.4.5-1") == ("apptainer", (1, 4, 5))
    assert check_version("apptainer version 1.4.5\n") == "apptainer version 1.4.5"
    with pytest.raises(EngineError) as old:
        check_version("apptainer version 1.0.3")
    assert f"Apptainer 1.0.3 is too old: cbuild needs Apptainer >= {need}" in old.value.message
    assert "--overlay" in old.value.message
    with pytest.raises(EngineError) as ce:
        check_version("singularity-ce version 3.11.4")
    assert "is not Apptainer" in ce.value.message and need in ce.value.message


def test_failing_section_is_the_last_one_apptainer_entered() -> None:
    log = "INFO:    Starting build...\nINFO:    Running post scriptlet\n+ false\nFATAL: exit 1\n"
    assert failing_section(log) == "%post"
    assert failing_section("INFO:    Starting build...\nFATAL: no mirror\n").startswith(
        "the bootstrap"
    )
    assert failing_section(log + "INFO:    Creating SIF file...\nFATAL: no space\n").startswith(
        "SIF creation"
    )


def test_subuid_fix_names_the_missing_line() -> None:
    probe = (
        "DEBUG   [U=1001,P=7]   handleConfDir()   /home/alice/.apptainer already exists.\n"
        "INFO    [U=1001,P=7]   fakerootExec()    User not listed in /etc/subuid, trying "
        "root-mapped namespace\n"
    )
    fix = subuid_fix(probe)
    assert fix is not None
    assert "/etc/subuid and /etc/subgid have no line for alice (uid 1001)" in fix
    assert "`alice:100000:65536`" in fix
    assert subuid_fix("DEBUG [U=1000,P=1] all fine\n") is None


def test_registry_host_of_a_reference() -> None:
    assert registry_host("docker.io/library/debian:bookworm-slim") == "registry-1.docker.io"
    assert registry_host("debian:bookworm-slim") == "registry-1.docker.io"
    assert registry_host("library/debian") == "registry-1.docker.io"
    assert registry_host("ghcr.io/org/img:1") == "ghcr.io"
    assert registry_host("localhost:5000/img") == "localhost:5000"
