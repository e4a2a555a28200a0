"""cbuild as a site installs it: its wheel (`pip wheel .`) in a fresh venv, used from an
unrelated folder with a cbuild.toml. A real build there (the C fixture, --sdist), the shipped
recipes and schema, `cbuild run` streaming, and `cbuild report` of that wheelhouse rendered in
a real headless Chromium (Debian's package, from ci/setup.sh)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_RECIPE, make_sdist

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
TARGET = "gentoo2023-x86-64-v3"


def sh(*argv: str | Path, cwd: Path | None = None, timeout: int = 900) -> str:
    res = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
    assert res.returncode == 0, f"{argv}: {res.stdout[-2000:]}{res.stderr[-3000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def cbuild(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cbuild installed from its own wheel into a fresh venv (no editable checkout)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"  # a copy: building writes build/ beside the sources
    files = sh("git", "ls-files", "-co", "--exclude-standard", cwd=REPO).splitlines()
    for rel in files:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    pip = [sys.executable, "-m", "pip"]
    sh(*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src)
    (wheel,) = (tmp / "dist").glob("cbuild-*.whl")
    sh(sys.executable, "-m", "venv", tmp / "venv")
    sh(tmp / "venv" / "bin" / "pip", "install", "-q", wheel)
    return tmp / "venv" / "bin" / "cbuild"


@pytest.fixture(scope="module")
def site(cbuild: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unrelated folder with a cbuild.toml, its own recipes and a real build in it."""
    work = tmp_path_factory.mktemp("site")
    (work / "recipes").mkdir()
    shutil.copy(FIXTURE_RECIPE, work / "recipes")
    (work / "cbuild.toml").write_text('wheelhouse = "wh"\nrecipes = ["recipes"]\njobs = 1\n')
    sdist = make_sdist(work / "sdists")
    out = sh(
        cbuild, "wheel", "isafixture", "0.1.0", "-t", TARGET, "--sdist", sdist, "--json", cwd=work
    )
    report = json.loads(out)
    assert [t["status"] for t in report["targets"]] == ["tested"]
    return work


def test_installed_wheel_builds_from_an_unrelated_folder(cbuild: Path, site: Path) -> None:
    placed = sorted(p.relative_to(site / "wh").as_posix() for p in (site / "wh").rglob("*.whl"))
    assert placed == [
        "gentoo2023/x86-64-v3/isafixture-0.1.0+computecanada-cp311-cp311-linux_x86_64.whl"
    ]
    # The recipe came from the site's folder (cbuild.toml), recorded in the manifest.
    manifest = json.loads((site / "wh" / f"{placed[0]}.json").read_text())
    assert manifest["recipe"]["file"] == FIXTURE_RECIPE.read_text()
    # The shipped recipes are package data of the installed cbuild.
    shown = sh(cbuild, "recipe", "show", "biopython", "1.85", cwd=site)
    first = shown.splitlines()[0]
    assert re.search(r"from .*/site-packages/builder/data/recipes/biopython\.toml$", first), first
    assert 'import_names = ["Bio"]' in shown
    schema = json.loads(sh(cbuild, "recipe", "schema", cwd=site))
    assert schema["title"] and "package" in schema["properties"]
    assert sh(cbuild, "recipe", "schema", "--check", cwd=site) == ""  # the shipped copy agrees


def test_run_streams_output_as_it_comes(cbuild: Path, site: Path) -> None:
    cmd = [str(cbuild), "run", TARGET, "--", "sh", "-c", "echo first; sleep 6; echo second"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=site
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    seen = time.monotonic()
    rest = proc.stdout.read()
    proc.wait(timeout=600)
    done = time.monotonic()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert (first, rest) == ("first\n", "second\n")
    assert done - seen > 4, "the first line came only when the command ended"


CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


def test_report_renders_in_chromium(cbuild: Path, site: Path, tmp_path: Path) -> None:
    wh = site / "wh"
    (built,) = (wh / "gentoo2023" / "x86-64-v3").glob("*.whl")
    # Planted: a compiled wheel copied by hand into the pure folder, without its manifest.
    (wh / "generic").mkdir(exist_ok=True)
    stray = shutil.copy(built, wh / "generic" / built.name)
    # The site's wheelhouse: an older copy of the wheel (other bytes), and one it has alone.
    theirs = tmp_path / "theirs"
    (theirs / "gentoo2023" / "x86-64-v3").mkdir(parents=True)
    (theirs / "gentoo2023" / "x86-64-v3" / built.name).write_bytes(b"older")
    (theirs / "generic").mkdir()
    (theirs / "generic" / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"six")
    page = tmp_path / "report.html"
    res = subprocess.run(
        [cbuild, "report", wh, "--html", page, "--against", theirs, "--json"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1, res.stderr  # the planted wheel is a problem
    data = json.loads(res.stdout)
    rows = {w["folder"]: w for w in data["wheels"]}
    assert rows["gentoo2023/x86-64-v3"]["tested"] == "qemu"
    assert (
        rows["gentoo2023/x86-64-v3"]["contains"] == "x86-64-v3"
        and rows["gentoo2023/x86-64-v3"]["level_ok"]
    )
    assert rows["generic"]["level_ok"] is False and data["without_manifest"] == [built.name]
    assert {(s["action"], s["path"]) for s in data["sync"]} == {
        ("replace", f"gentoo2023/x86-64-v3/{built.name}"),
        ("add", f"generic/{built.name}"),
        ("only-there", "generic/six-1.16.0-py2.py3-none-any.whl"),
    }
    assert "<script" in page.read_text() and "http" not in page.read_text().split("<body")[1]

    dom = sh(*CHROMIUM, "--dump-dom", page.as_uri(), timeout=120)
    assert 'data-rendered="yes"' in dom  # the page's script ran
    cards = dict(re.findall(r'id="n-([a-z]+)"><b>(\d+)</b>', dom))
    assert cards == {
        "wheels": "2",
        "packages": "1",
        "tested": "1",
        "problems": "1",
        "nomanifest": "1",
    }
    row = re.search(r'<tr data-package="isafixture 0.1.0\+computecanada">(.*?)</tr>', dom).group(1)
    assert 'class="cell qemu" data-tested="qemu"' in row
    assert "contains x86-64-v3 / promises x86-64-v3" in row
    assert 'class="cell bad" data-tested="unknown"' in row  # the stray, in the (generic) column
    assert "compiled code (up to x86-64-v3) in the pure folder generic/" in dom
    assert dom.count('class="sync-replace"') == 1 and dom.count('class="sync-add"') == 1
    shot = tmp_path / "report.png"
    sh(*CHROMIUM, "--window-size=1000,760", f"--screenshot={shot}", page.as_uri(), timeout=120)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1000, 760) and len(png) > 20_000  # drawn, not blank
    stray.unlink()
    if out := __import__("os").environ.get("CBUILD_REPORT_SCREENSHOT"):  # the README's picture
        shutil.copy(shot, out)
