"""Targets, CPU levels and image specs: pure logic, no engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli.app import app
from builder.errors import ConfigError
from builder.images.paths import DEFAULT_PATH
from builder.images.render import rendered_files
from builder.images.spec import render_containerfile
from builder.providers import spec_for, unbuildable
from builder.targets.levels import level
from builder.targets.model import all_targets, github_matrix, load_stack, resolve

REPO = Path(__file__).resolve().parent.parent


def test_target_ids_and_folders() -> None:
    ts = {t.id: t for t in all_targets()}
    # The stack's default Python (its first, 3.11) keeps the ids made before the Python axis.
    levels = ["generic", "x86-64-v3", "x86-64-v4"]
    assert list(ts) == [
        *(f"gentoo2023-{lv}" for lv in levels),
        *(f"gentoo2023-{lv}-py312" for lv in levels),
        *(f"gentoo2023-{lv}-py313" for lv in levels),
    ]
    assert ts["gentoo2023-x86-64-v3-py313"].python == "3.13"
    assert ts["gentoo2023-x86-64-v3-py313"].python_tag == "cp313"
    assert ts["gentoo2023-x86-64-v3-py313"].folder == "gentoo2023/x86-64-v3"  # same folder
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


def test_python_selects_and_default_suffix_is_an_alias() -> None:
    ids = [t.id for t in resolve(["gentoo2023-x86-64-v3"], pythons=("3.11", "3.13"))]
    assert ids == ["gentoo2023-x86-64-v3", "gentoo2023-x86-64-v3-py313"]
    assert resolve(["gentoo2023-generic-py311"]) == resolve(["gentoo2023-generic"])
    assert [t.python for t in all_targets(pythons=("3.13",))] == ["3.13"] * 3
    with pytest.raises(ConfigError, match="Python 3.9") as exc:
        resolve(["gentoo2023-generic"], pythons=("3.9",))
    assert "--python" in exc.value.fix


def test_source_python_is_a_shared_layer() -> None:
    """3.13's CPython layer: the same for every level, after the provider's packages, with
    the tarball pinned; a recipe's packages come after it so they do not rebuild it."""
    v3, v4 = (
        spec_for(t)
        for t in resolve(["gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4"], pythons=("3.13",))
    )
    assert v3.layers == v4.layers and len(v3.layers) == 1
    assert v3.layers[0].inputs[0].sha256.startswith("93e583f2")
    assert v3.packages == spec_for(all_targets()[1]).packages
    assert ("PATH", "/opt/python/3.13/bin:" + DEFAULT_PATH) in v3.env
    fftw = spec_for(resolve(["gentoo2023-x86-64-v3-py313"])[0], ("libfftw3-dev",))
    assert fftw.layers == v3.layers and fftw.packages == v3.packages
    assert "libfftw3-dev" in fftw.steps[0]
    text = render_containerfile(v3)
    assert "COPY Python-3.13.5.tar.xz /tmp/cbuild-inputs/Python-3.13.5.tar.xz" in text
    assert text.index("COPY") < text.index("ENV ")  # before anything a level sets


def test_default_python_images_keep_their_hash() -> None:
    """Images defined before the Python axis keep their hash (and their built images)."""
    hashes = [spec_for(t).hash for t in all_targets(pythons=("3.11",))]
    assert hashes == ["2f99bdce02f0d9f1", "4024548fb50cb4d5", "287c8ffe6999c3c1"]


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
    every = all_targets(accelerators=None)
    here = [t for t in every if t not in unbuildable(every)]
    assert matrix == github_matrix(here)
    assert {"3.11", "3.13"} <= {row["python"] for row in matrix["include"]}


def test_targets_json() -> None:
    result = CliRunner().invoke(app, ["targets", "--json"])
    rows = json.loads(result.stdout)
    assert {r["id"] for r in rows} == {t.id for t in all_targets(accelerators=None)}
    by_id = {r["id"]: r for r in rows}
    assert by_id["gentoo2023-x86-64-v3-py313"]["buildable"] is True
    py312 = by_id["gentoo2023-x86-64-v3-py312"]
    assert py312["buildable"] or "Python-3.12.11.tar.xz" in py312["not_buildable"]
    assert all(r["flags"]["CFLAGS"].startswith("-O2 -march=") for r in rows)


def test_unknown_target_exits_nonzero_with_message() -> None:
    result = CliRunner().invoke(app, ["wheel", "x", "1.0", "--target", "nope"])
    assert result.exit_code == 2
    assert "unknown target id 'nope'" in result.output


def test_image_hash_changes_with_definition_only() -> None:
    a, b, c = (spec_for(t) for t in all_targets(pythons=("3.11",)))
    assert a.hash == spec_for(all_targets()[0]).hash  # stable
    assert len({a.hash, b.hash, c.hash}) == 3  # flags and labels differ per target
    text = render_containerfile(c)
    assert "ARG BASE=docker.io/library/debian:bookworm-slim" in text
    assert 'ENV CFLAGS="-O2 -march=x86-64-v4 -mtune=generic"' in text
    assert f'org.cbuild.spec-hash="{c.hash}"' in text


def test_committed_images_are_in_sync_with_the_renderer() -> None:
    for rel, text in rendered_files(all_targets(accelerators=None)).items():
        path = REPO / "images" / rel
        assert path.exists(), f"{path} missing: run `cbuild images render`"
        assert path.read_text() == text, f"{path} drifted: run `cbuild images render`"


def test_recipe_system_packages_make_an_image_of_their_own() -> None:
    t = all_targets()[1]
    plain, fftw = spec_for(t), spec_for(t, ("libfftw3-dev", "build-essential"))
    assert fftw.hash != plain.hash and fftw.tag != plain.tag
    assert fftw.packages == (*plain.packages, "libfftw3-dev")  # no duplicate, sorted extras
    assert "libfftw3-dev" in render_containerfile(fftw)
