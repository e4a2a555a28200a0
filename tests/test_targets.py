"""Targets, CPU levels and image specs: pure logic, no engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli.app import app
from builder.errors import ConfigError
from builder.images.render import rendered_files
from builder.images.spec import render_containerfile
from builder.providers import spec_for
from builder.targets.levels import level
from builder.targets.model import all_targets, github_matrix, load_stack, resolve

REPO = Path(__file__).resolve().parent.parent


def test_target_ids_and_folders() -> None:
    ts = {t.id: t for t in all_targets()}
    assert list(ts) == ["gentoo2023-generic", "gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4"]
    assert ts["gentoo2023-generic"].folder == "gentoo2023/generic"
    assert ts["gentoo2023-x86-64-v4"].folder == "gentoo2023/x86-64-v4"
    # The generic folder is compiled for the stack's baseline: every gentoo2023 node has v3.
    assert ts["gentoo2023-generic"].cpu_level.name == "x86-64-v3"
    assert ts["gentoo2023-x86-64-v4"].accelerator == "cpu"
    assert ts["gentoo2023-x86-64-v4"].python == "3.11"


def test_flags_come_from_archspec() -> None:
    flags = resolve(["gentoo2023-x86-64-v4"])[0].compiler_flags()
    assert "-march=x86-64-v4" in flags["CFLAGS"]
    assert flags["CFLAGS"] == flags["CXXFLAGS"] == flags["FFLAGS"]
    assert flags["LDFLAGS"] == "-Wl,-z,x86-64-v4"  # ISA level recorded in the ELF note


def test_qemu_model_has_exactly_the_level_features() -> None:
    v3 = level("x86-64-v3")
    cpu = v3.qemu_cpu.split(",")
    assert cpu[0] == "qemu64"
    assert {"+avx2", "+fma", "+bmi2", "+sse4.2", "+movbe"} <= set(cpu)
    assert not any("avx512" in f for f in cpu)
    assert v3.qemu_emulable and not level("x86-64-v4").qemu_emulable


def test_unknown_target_names_the_fix() -> None:
    with pytest.raises(ConfigError) as exc:
        resolve(["gentoo2023-x86-64-v5"])
    assert "gentoo2023-x86-64-v5" in str(exc.value)
    assert "gentoo2023-x86-64-v4" in exc.value.fix


def test_unknown_level_is_an_error() -> None:
    with pytest.raises(KeyError, match="x86-64-v9"):
        level("x86-64-v9")


def test_stack_data() -> None:
    stack = load_stack("gentoo2023")
    assert stack.local_label == "computecanada"
    assert stack.baseline_level == "x86-64-v3"
    assert stack.folder_for_level("x86-64-v3") == "gentoo2023/x86-64-v3"


def test_github_matrix_shape_from_cli() -> None:
    result = CliRunner().invoke(app, ["targets", "--matrix", "github"])
    assert result.exit_code == 0, result.output
    matrix = json.loads(result.stdout)
    assert matrix == github_matrix(all_targets())
    assert [row["target"] for row in matrix["include"]] == [t.id for t in all_targets()]


def test_targets_json() -> None:
    result = CliRunner().invoke(app, ["targets", "--json"])
    rows = json.loads(result.stdout)
    assert {r["id"] for r in rows} == {t.id for t in all_targets()}
    assert all(r["flags"]["CFLAGS"].startswith("-O2 -march=") for r in rows)


def test_unknown_target_exits_nonzero_with_message() -> None:
    result = CliRunner().invoke(app, ["wheel", "x", "1.0", "--target", "nope"])
    assert result.exit_code == 2
    assert "unknown target id 'nope'" in result.output


def test_image_hash_changes_with_definition_only() -> None:
    a, b, c = (spec_for(t) for t in all_targets())
    assert a.hash == spec_for(all_targets()[0]).hash  # stable
    assert len({a.hash, b.hash, c.hash}) == 3  # flags and labels differ per target
    text = render_containerfile(c)
    assert "ARG BASE=docker.io/library/debian:bookworm-slim" in text
    assert 'ENV CFLAGS="-O2 -march=x86-64-v4 -mtune=generic"' in text
    assert f'org.cbuild.spec-hash="{c.hash}"' in text


def test_committed_images_are_in_sync_with_the_renderer() -> None:
    for rel, text in rendered_files(all_targets()).items():
        path = REPO / "images" / rel
        assert path.exists(), f"{path} missing: run `cbuild images render`"
        assert path.read_text() == text, f"{path} drifted: run `cbuild images render`"


def test_recipe_system_packages_make_an_image_of_their_own() -> None:
    t = all_targets()[1]
    plain, fftw = spec_for(t), spec_for(t, ("libfftw3-dev", "build-essential"))
    assert fftw.hash != plain.hash and fftw.tag != plain.tag
    assert fftw.packages == (*plain.packages, "libfftw3-dev")  # no duplicate, sorted extras
    assert "libfftw3-dev" in render_containerfile(fftw)
