"""The GitHub Actions workflow users copy: valid for actionlint, and its matrix plumbing matches
what `cbuild targets --matrix github` prints."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from builder.providers import unbuildable
from builder.targets.model import all_targets, github_matrix

WORKFLOW = Path(__file__).parent.parent / "ci" / "github" / "cbuild.yml"
TEXT = WORKFLOW.read_text()


def test_actionlint_accepts_the_workflow() -> None:
    # The dev extra installs it beside this interpreter, which need not be on PATH.
    here = str(Path(sys.executable).parent)
    actionlint = shutil.which("actionlint", path=here) or shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (pip install -e '.[dev]' brings it)")
    env = {**os.environ, "PATH": f"{here}:{os.environ.get('PATH', '')}"}  # and its shellcheck
    proc = subprocess.run(
        [actionlint, "-no-color", str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_matrix_shape_matches_cbuild_targets() -> None:
    matrix = github_matrix(all_targets())
    assert set(matrix) == {"include"} and matrix["include"]
    ids = [t.id for t in all_targets()]
    assert [job["target"] for job in matrix["include"]] == ids
    # every `matrix.<key>` the workflow uses is in every job of the matrix cbuild prints
    used = set(re.findall(r"(?<![.\w])matrix\.([A-Za-z_][\w-]*)", TEXT))
    assert "target" in used
    for job in matrix["include"]:
        assert used <= set(job), f"workflow uses matrix.{used - set(job)} that {job} lacks"
        # artifact names are built from the target id: no characters upload-artifact refuses
        assert re.fullmatch(r"[A-Za-z0-9._-]+", job["target"]), job["target"]
    # one line: `echo "matrix=$(...)" >> "$GITHUB_OUTPUT"` takes exactly one
    assert "\n" not in json.dumps(matrix, separators=(",", ":"))


def test_workflow_plumbs_the_matrix_from_cbuild() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the workflow's structure")
    wf: dict[str, Any] = yaml.safe_load(TEXT)
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    inputs = on["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"package", "version", "provider"}
    # opt-in: the real stack only when asked for, mounted by the public CVMFS action
    assert inputs["provider"]["default"] == "standalone" and wf["env"]["CBUILD_PROVIDER"] == (
        "${{ inputs.provider }}"
    )
    (mount,) = [
        s for s in wf["jobs"]["build"]["steps"] if "github-action-cvmfs" in s.get("uses", "")
    ]
    assert mount["if"] == "inputs.provider == 'cvmfs'"
    assert mount["with"]["cvmfs_repositories"] == "soft.computecanada.ca"
    jobs = wf["jobs"]
    producer = jobs["matrix"]
    assert producer["outputs"]["matrix"] == "${{ steps.targets.outputs.matrix }}"
    (step,) = [s for s in producer["steps"] if s.get("id") == "targets"]
    assert 'echo "matrix=$(cbuild targets --matrix github)" >> "$GITHUB_OUTPUT"' in step["run"]
    build = jobs["build"]
    assert build["needs"] == "matrix"
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    runs = "\n".join(s.get("run", "") for s in build["steps"])
    assert 'cbuild wheel "$PACKAGE" "$VERSION" --target "${{ matrix.target }}"' in runs
    assert "--wheelhouse wheelhouse --unplaced unplaced --json" in runs
    for tool in ("podman", "runc", "qemu-user-static", "mmdebstrap"):
        assert re.search(rf"apt-get install[^\n]*(\\\n[^\n]*)*\b{tool}\b", runs), tool
    assert "podman system service" in runs
    uploads = [
        s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")
    ]
    exports = [s for s in uploads if s["with"]["path"].rstrip("/") == "unplaced"]
    assert exports and exports[0]["with"]["name"] == "unplaced-${{ matrix.target }}"
    # One job places every target's export together, as one --all-targets run would.
    place = jobs["place"]
    assert set(place["needs"]) == {"matrix", "build"}
    (download,) = [s for s in place["steps"] if "download-artifact" in str(s.get("uses", ""))]
    assert download["with"] == {"pattern": "unplaced-*", "path": "unplaced"}
    placing = "\n".join(s.get("run", "") for s in place["steps"])
    assert "cbuild place unplaced --wheelhouse wheelhouse" in placing
    assert "jq -r '.include[].target'" in placing  # every target of the matrix is expected
    (up,) = [s for s in place["steps"] if "upload-artifact" in str(s.get("uses", ""))]
    assert up["with"]["path"].rstrip("/") == "wheelhouse" and up["with"]["name"] == "wheelhouse"


def test_cli_prints_the_matrix_on_one_line() -> None:
    cli = pytest.importorskip("builder.cli.app", reason="builder.cli.app is not importable")
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, ["targets", "--matrix", "github"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("\n") == 1 and out.endswith("\n"), repr(out)
    every = all_targets(accelerators=None)  # CUDA variants too
    here = [t for t in every if t not in unbuildable(every)]
    assert json.loads(out) == github_matrix(here)  # the targets buildable where it runs
