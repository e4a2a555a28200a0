"""builder.workflows.recursive:
the planner over requirement graphs and wheelhouse listings (pure), what an
sdist says it requires, and a tiny PyPI-shaped index on 127.0.0.1 (also used by the integration
test) for the index client and the listing of missing dependencies."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from builder.targets.model import resolve
from builder.wheelhouse import layout
from builder.wheelhouse.layout import find_links
from builder.workflows import recursive
from builder.workflows.recursive import (
    Candidate,
    DependencyCycle,
    DependencyError,
    PyPIIndex,
    Requires,
    Wheelhouse,
    plan,
    sdist_requires,
)

GENERIC, V3, V4 = resolve(["gentoo2023-generic", "gentoo2023-x86-64-v3", "gentoo2023-x86-64-v4"])
CP311 = "cp311-cp311-linux_x86_64"


# --- a requirement graph as an index ------------------------------------------------------------


class GraphIndex:
    """An index given as {name: {version: [requirements]}}; `unknown` versions say their
    requirements are unknown before the build (the list is then the hint)."""

    def __init__(
        self,
        graph: dict[str, dict[str, list[str]]],
        requires_python: dict[tuple[str, str], str] | None = None,
        unknown: set[tuple[str, str]] = frozenset(),
    ) -> None:
        self.graph = {canonicalize_name(k): v for k, v in graph.items()}
        self.names = {canonicalize_name(k): k for k in graph}
        self.rp = requires_python or {}
        self.unknown = unknown
        self.asked: list[str] = []

    def releases(self, name: str) -> list[Candidate]:
        key = canonicalize_name(name)
        self.asked.append(key)
        return [
            Candidate(self.names[key], v, self.rp.get((key, v))) for v in self.graph.get(key, {})
        ]

    def requires(self, name: str, version: str) -> Requires:
        reqs = tuple(self.graph[canonicalize_name(name)][version])
        known = (canonicalize_name(name), version) not in self.unknown
        return Requires(reqs, known, "graph")


def wheelhouse(folders: dict[str, dict[str, list[str]]] | None = None) -> Wheelhouse:
    """A listing: folder -> {wheel file name: its requirements}."""
    files: dict[str, set[str]] = {}
    given: dict[str, tuple[str, ...]] = {}
    for folder, wheels in (folders or {}).items():
        files[folder] = set(wheels)
        given.update({f"{folder}/{w}": tuple(r) for w, r in wheels.items()})
    return Wheelhouse(files, None, given)


def order(p: recursive.Plan) -> list[str]:
    return [f"{s.name}=={s.version}" for s in p.steps]


def root(*reqs: str, known: bool = True) -> Requires:
    return Requires(reqs, known, "test")


# --- order ----------------------------------------------------------------------------------


def test_dependencies_first_in_post_order() -> None:
    idx = GraphIndex({"b": {"1.0": ["c>=1"]}, "c": {"1.0": [], "2.0": []}, "d": {"3": ["c"]}})
    p = plan("a", "1", root("b", "c", "d"), [GENERIC], wheelhouse(), idx)
    assert order(p) == ["c==2.0", "b==1.0", "d==3", "a==1"]
    assert [s.chain for s in p.steps] == [("a", "b", "c"), ("a", "b"), ("a", "d"), ("a",)]
    assert p.steps[0].requirement == "c>=1"
    assert p.steps[-1].requirement is None and p.steps[-1].targets == ("gentoo2023-generic",)
    assert [m.requirement for m in p.missing] == ["b", "c>=1", "c", "d", "c"]


def test_newest_version_that_satisfies_has_an_sdist_and_takes_the_python() -> None:
    idx = GraphIndex(
        {"c": {"1.0": [], "1.5": [], "2.0": [], "2.1rc1": [], "1.9": []}},
        requires_python={("c", "1.9"): ">=3.12"},
    )
    p = plan("a", "1", root("c<2"), [GENERIC], wheelhouse(), idx)
    assert order(p) == ["c==1.5", "a==1"]  # 1.9 needs Python 3.12; 2.1rc1 is a prerelease
    p = plan("a", "1", root("c>=2.1rc1"), [GENERIC], wheelhouse(), idx)
    assert order(p) == ["c==2.1rc1", "a==1"]  # asked for by the specifier


def test_nothing_satisfies_stops_with_the_chain() -> None:
    idx = GraphIndex({"b": {"1": ["c>=5"]}, "c": {"1.0": []}})
    with pytest.raises(DependencyError) as exc:
        plan("a", "1", root("b"), [GENERIC], wheelhouse(), idx)
    assert exc.value.message.startswith("a -> b -> c: no version of c on the index satisfies >=5")
    with pytest.raises(DependencyError, match=r"^a -> nope: no project named 'nope'"):
        plan("a", "1", root("nope"), [GENERIC], wheelhouse(), idx)


def test_conflicting_specifiers_are_an_error_not_a_guess() -> None:
    idx = GraphIndex({"b": {"1": ["c<2"]}, "c": {"1.0": [], "2.0": []}})
    with pytest.raises(DependencyError, match=r"a -> b -> c: c<2 does not accept c 2.0, chosen "):
        plan("a", "1", root("c", "b"), [GENERIC], wheelhouse(), idx)


# --- cycles ---------------------------------------------------------------------------------


def test_cycle_stops_with_the_chain() -> None:
    idx = GraphIndex({"b": {"1": ["c"]}, "c": {"1": ["b"]}})
    with pytest.raises(DependencyCycle) as exc:
        plan("a", "1", root("b"), [GENERIC], wheelhouse(), idx)
    assert exc.value.chain == ("a", "b", "c", "b")
    assert exc.value.message.startswith("a -> b -> c -> b: dependency cycle")


def test_cycle_back_to_the_package_asked_for() -> None:
    idx = GraphIndex({"b": {"1": ["a>=1"]}, "a": {"1": []}})
    with pytest.raises(DependencyCycle) as exc:
        plan("a", "1", root("b"), [GENERIC], wheelhouse(), idx)
    assert exc.value.chain == ("a", "b", "a")


def test_a_held_wheel_breaks_a_cycle() -> None:
    # b is in the wheelhouse already: its requirement on a is the node's business, not a build.
    idx = GraphIndex({"b": {"1": ["a"]}})
    wh = wheelhouse({"generic": {"b-1+computecanada-py3-none-any.whl": ["a"]}})
    p = plan("a", "1", root("b"), [GENERIC], wh, idx)
    assert order(p) == ["a==1"]


# --- held ------------------------------------------------------------------------------------


def test_held_by_a_local_label_in_the_layouts_order() -> None:
    idx = GraphIndex({"c": {"1.1": [], "1.2": [], "1.3": []}})
    wh = wheelhouse({"gentoo2023/generic": {f"c-1.2+computecanada-{CP311}.whl": []}})
    p = plan("a", "1", root("c>=1.2"), [GENERIC], wh, idx)
    assert order(p) == ["a==1"] and idx.asked == []
    assert [(h.target, h.wheel) for h in p.held] == [
        ("gentoo2023-generic", f"gentoo2023/generic/c-1.2+computecanada-{CP311}.whl")
    ]
    # 1.2+computecanada is not >1.2: the newest on the index is built.
    assert order(plan("a", "1", root("c>1.2"), [GENERIC], wh, idx)) == ["c==1.3", "a==1"]


def test_level_folder_serves_its_level_only() -> None:
    idx = GraphIndex({"c": {"1": []}})
    wh = wheelhouse({"gentoo2023/x86-64-v4": {f"c-1+computecanada-{CP311}.whl": []}})
    p = plan("a", "1", root("c"), [GENERIC, V3, V4], wh, idx)
    assert order(p) == ["c==1", "a==1"]
    assert p.steps[0].targets == ("gentoo2023-generic", "gentoo2023-x86-64-v3")


def test_pure_folder_and_stack_generic_serve_every_level() -> None:
    idx = GraphIndex({})
    wh = wheelhouse(
        {
            "generic": {"p-2-py3-none-any.whl": []},
            "gentoo2023/generic": {f"c-1+computecanada-{CP311}.whl": []},
        }
    )
    p = plan("a", "1", root("p", "c"), [GENERIC, V3, V4], wh, idx)
    assert order(p) == ["a==1"] and not p.missing


def test_wheel_for_another_python_or_platform_is_not_held() -> None:
    idx = GraphIndex({"c": {"1": []}})
    for name in (
        "c-1-cp312-cp312-linux_x86_64.whl",
        "c-1-cp311-cp311-win_amd64.whl",
        "c-1-cp311-cp311-manylinux_2_38_x86_64.whl",  # newer glibc than the provider's 2.36
        "c-1-cp311-cp311-linux_aarch64.whl",
    ):
        wh = wheelhouse({"generic": {name: []}})
        assert order(plan("a", "1", root("c"), [GENERIC], wh, idx)) == ["c==1", "a==1"], name
    for name in (
        "c-1-cp39-abi3-linux_x86_64.whl",
        "c-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "c-1-py2.py3-none-any.whl",
    ):
        wh = wheelhouse({"generic": {name: []}})
        assert order(plan("a", "1", root("c"), [GENERIC], wh, idx)) == ["a==1"], name


def test_held_wheels_requirements_are_followed() -> None:
    idx = GraphIndex({"m": {"1": []}})
    wh = wheelhouse({"generic": {"h-1+computecanada-py3-none-any.whl": ["m", "x; extra == 'no'"]}})
    p = plan("a", "1", root("h"), [GENERIC], wh, idx)
    assert order(p) == ["m==1", "a==1"]
    assert p.steps[0].chain == ("a", "h", "m")


# --- markers and extras --------------------------------------------------------------------------


def test_markers_for_linux_x86_64_and_the_targets_python() -> None:
    idx = GraphIndex({n: {"1": []} for n in "bcdefgh"})
    p = plan(
        "a",
        "1",
        root(
            'b; python_version < "3.10"',
            'c; sys_platform == "win32"',
            'd; platform_machine == "x86_64" and sys_platform == "linux"',
            'e; python_version >= "3.11"',
            "f; platform_python_implementation == 'PyPy'",
            'g; extra == "docs"',
            'h; os_name == "posix"',
        ),
        [GENERIC],
        wheelhouse(),
        idx,
    )
    assert order(p) == ["d==1", "e==1", "h==1", "a==1"]


def test_marker_differs_by_target_python() -> None:
    t312 = type(GENERIC)(GENERIC.stack, "x86-64-v3", python="3.12")
    idx = GraphIndex({"tomli": {"2": []}})
    p = plan("a", "1", root('tomli; python_version < "3.12"'), [GENERIC, t312], wheelhouse(), idx)
    assert p.steps[0].name == "tomli" and p.steps[0].targets == ("gentoo2023-generic",)


def test_extras_only_when_asked_for() -> None:
    idx = GraphIndex(
        {
            "b": {
                "1": [
                    "w; extra == 'docs'",
                    "v; extra == 'viz'",
                    'u; extra == "docs" and os_name == "nt"',
                ]
            },
            "w": {"1": []},
            "v": {"1": []},
            "u": {"1": []},
        }
    )
    assert order(plan("a", "1", root("b"), [GENERIC], wheelhouse(), idx)) == ["b==1", "a==1"]
    p = plan("a", "1", root("b[docs]"), [GENERIC], wheelhouse(), idx)
    assert order(p) == ["w==1", "b==1", "a==1"]
    # Asked for later, by another path: ordered from the whole graph, still before b.
    idx.graph["c"] = {"1": ["b[viz]"]}
    idx.names["c"] = "c"
    p = plan("a", "1", root("b", "c"), [GENERIC], wheelhouse(), idx)
    assert order(p) == ["v==1", "b==1", "c==1", "a==1"]


def test_recipe_edits_apply_before_planning() -> None:
    idx = GraphIndex({"b": {"1": []}, "nvidia-cublas-cu12": {"1": []}})

    def drop_b(name: str, version: str, target, reqs: list[str]) -> list[str]:
        return [r for r in reqs if not r.startswith("b")]

    p = plan("a", "1", root("b", "c; extra == 'x'"), [GENERIC], wheelhouse(), idx, drop_b)
    assert order(p) == ["a==1"]


def test_without_an_index_missing_are_listed_not_planned() -> None:
    wh = wheelhouse({"generic": {"h-1-py3-none-any.whl": ["m>=2"]}})
    p = plan("a", "1", root("h", "b>=1"), [GENERIC, V3], wh, None)
    assert order(p) == ["a==1"]
    assert [m.line() for m in p.missing] == [
        "a -> h needs m>=2, which the wheelhouse does not hold for gentoo2023-generic",
        "a -> h needs m>=2, which the wheelhouse does not hold for gentoo2023-x86-64-v3",
        "a needs b>=1, which the wheelhouse does not hold for gentoo2023-generic, "
        "gentoo2023-x86-64-v3",
    ]


def test_unknown_requirements_are_a_hint_and_marked() -> None:
    idx = GraphIndex({"b": {"1": ["c"]}, "c": {"1": []}}, unknown={("b", "1")})
    p = plan("a", "1", root("b"), [GENERIC], wheelhouse(), idx)
    assert order(p) == ["c==1", "b==1", "a==1"]
    assert not p.steps[1].requires.known


def test_a_later_check_builds_on_the_plan_that_led_to_it() -> None:
    """After an unknown package's build: what its wheel needs is planned on top of the first
    plan, so a need of the package asked for is a cycle, not a second build of it."""
    idx = GraphIndex({"b": {"1": []}, "c": {"1": []}}, unknown={("b", "1")})
    first = plan("a", "1", root("b"), [GENERIC], wheelhouse(), idx)
    prior = {k: n for k, n in first._nodes.items() if k != "b"}
    after = plan(
        "b",
        "1",
        Requires(("c",), True, "wheel", True),
        [GENERIC],
        wheelhouse(),
        idx,
        chain=("a", "b"),
        prior=prior,
    )
    assert order(after) == ["c==1", "b==1"] and after.steps[0].chain == ("a", "b", "c")
    with pytest.raises(DependencyCycle) as exc:
        plan(
            "b",
            "1",
            Requires(("a",), True, "wheel", True),
            [GENERIC],
            wheelhouse(),
            idx,
            chain=("a", "b"),
            prior=prior,
        )
    assert exc.value.chain == ("a", "b", "a")


def test_find_links_lowest_level_first() -> None:
    links = find_links(Path("/wh"), [V4, GENERIC, V3])
    assert [str(p) for p in links] == [
        "/wh/gentoo2023/generic",
        "/wh/generic",
        "/wh/gentoo2023/x86-64-v3",
        "/wh/gentoo2023/x86-64-v4",
    ]
    assert layout.search_folders(V4) == (
        "gentoo2023/x86-64-v4",
        "gentoo2023/generic",
        "generic",
    )


# --- what an sdist requires ----------------------------------------------------------------


def write_sdist(dest: Path, name: str, version: str, files: dict[str, str | bytes]) -> Path:
    """`name-version.tar.gz` with one top folder and fixed mtimes, as a real sdist."""
    top = f"{name}-{version}"
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{top}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for rel, text in sorted(files.items()):
            data = text if isinstance(text, bytes) else text.encode()
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out


def pkg_info(name: str, version: str, mv: str, *requires: str, dynamic: str = "") -> str:
    lines = [f"Metadata-Version: {mv}", f"Name: {name}", f"Version: {version}"]
    lines += [f"Dynamic: {dynamic}"] if dynamic else []
    lines += [f"Requires-Dist: {r}" for r in requires]
    return "\n".join(lines) + "\n\nA package.\n"


def pure_sdist(
    dest: Path,
    name: str,
    version: str,
    deps: list[str],
    mv: str = "2.2",
    code: str = "",
    dynamic: bool = False,
) -> Path:
    """A pure setuptools package whose module runs `code` on import; its PKG-INFO has
    Metadata-Version `mv`, and with `dynamic` its dependencies come from setup.py only."""
    mod = canonicalize_name(name).replace("-", "_")
    project = f'[project]\nname = "{name}"\nversion = "{version}"\n'
    if dynamic:
        project += 'dynamic = ["dependencies"]\n'
    else:
        project += f"dependencies = {json.dumps(deps)}\n"
    files = {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n' + project,
        f"{mod}/__init__.py": code or "VALUE = 1\n",
        "PKG-INFO": pkg_info(name, version, mv, *([] if dynamic and mv >= "2.2" else deps)),
    }
    if dynamic:
        files["setup.py"] = f"from setuptools import setup\nsetup(install_requires={deps!r})\n"
        if mv >= "2.2":
            files["PKG-INFO"] = pkg_info(name, version, mv, *deps, dynamic="Requires-Dist")
    return write_sdist(dest, name, version, files)


def test_sdist_requires_from_pkg_info_2_2(tmp_path: Path) -> None:
    s = pure_sdist(tmp_path, "usesdep", "1.0", ["isadep>=0.1", "rich; extra == 'cli'"])
    r = sdist_requires(s)
    assert r.known and r.source == "PKG-INFO 2.2"
    assert r.requirements == ("isadep>=0.1", "rich; extra == 'cli'")


def test_sdist_requires_dynamic_or_old_metadata_is_unknown(tmp_path: Path) -> None:
    r = sdist_requires(pure_sdist(tmp_path / "a", "x", "1", ["numpy"], dynamic=True))
    assert not r.known and "marks Requires-Dist dynamic" in r.source
    assert r.requirements == ("numpy",)  # the hint
    r = sdist_requires(pure_sdist(tmp_path / "b", "x", "1", ["numpy"], mv="2.1", dynamic=True))
    assert not r.known and "PKG-INFO 2.1: before 2.2" in r.source and "lists numpy" in r.source


def test_sdist_requires_from_static_pyproject(tmp_path: Path) -> None:
    # PKG-INFO 2.1 is not authoritative, but PEP 621 static [project] dependencies are.
    s = write_sdist(
        tmp_path,
        "y",
        "1",
        {
            "PKG-INFO": pkg_info("y", "1", "2.1", "wrong"),
            "pyproject.toml": '[project]\nname = "y"\nversion = "1"\n'
            'dependencies = ["numpy>=1.26"]\n'
            "[project.optional-dependencies]\nPlot = [\"matplotlib; os_name == 'posix'\"]\n",
        },
    )
    r = sdist_requires(s)
    assert r.known and r.source == "pyproject.toml [project] dependencies"
    assert r.requirements == (
        "numpy>=1.26",
        'matplotlib; (os_name == "posix") and extra == "plot"',
    )


def test_biopython_like_sdist_without_pyproject_is_unknown(tmp_path: Path) -> None:
    s = write_sdist(
        tmp_path,
        "bp",
        "1",
        {"PKG-INFO": pkg_info("bp", "1", "2.1", "numpy"), "setup.py": "..."},
    )
    r = sdist_requires(s)
    assert not r.known and r.requirements == ("numpy",)


# --- a PyPI-shaped index on 127.0.0.1 --------------------------------------------------------


class LocalIndex:
    """PyPI's JSON API for a folder of sdists: /pypi/<name>/json, /pypi/<name>/<version>/json
    (releases, urls, digests, packagetype, requires_python, upload times) and the files."""

    def __init__(self, sdists: list[Path], requires_python: dict[str, str] | None = None) -> None:
        self.files = {p.name: p for p in sdists}
        self.rp = requires_python or {}
        self.hits: list[str] = []
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.hits.append(self.path)
                body = index.answer(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LocalIndex:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _file(self, path: Path) -> dict[str, object]:
        data = path.read_bytes()
        return {
            "filename": path.name,
            "url": f"{self.url}/packages/{path.name}",
            "packagetype": "sdist",
            "digests": {"sha256": hashlib.sha256(data).hexdigest()},
            "requires_python": self.rp.get(path.name),
            "size": len(data),
            "upload_time": "2024-01-02T03:04:05",
            "upload_time_iso_8601": "2024-01-02T03:04:05.000000Z",
            "yanked": False,
        }

    def _project(self, name: str) -> dict[str, list[tuple[str, Path]]]:
        out: dict[str, list[tuple[str, Path]]] = {}
        for fname, path in self.files.items():
            proj, _, version = fname.removesuffix(".tar.gz").rpartition("-")
            if canonicalize_name(proj) == canonicalize_name(name):
                out.setdefault(proj, []).append((version, path))
        return out

    def answer(self, path: str) -> bytes | None:
        parts = path.strip("/").split("/")
        if parts[0] == "packages" and len(parts) == 2 and parts[1] in self.files:
            return self.files[parts[1]].read_bytes()
        if parts[0] != "pypi" or parts[-1] != "json" or len(parts) not in (3, 4):
            return None
        found = self._project(parts[1])
        if not found:
            return None
        ((real, versions),) = found.items()
        releases = {v: [self._file(p)] for v, p in versions}
        latest = max(releases, key=lambda v: tuple(int(x) for x in v.split(".")))
        if len(parts) == 4:
            if parts[2] not in releases:
                return None
            doc = {"info": {"name": real, "version": parts[2]}, "urls": releases[parts[2]]}
        else:
            doc = {
                "info": {"name": real, "version": latest},
                "releases": releases,
                "urls": releases[latest],
            }
        return json.dumps(doc).encode()


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalIndex]:
    sdists = [
        pure_sdist(tmp_path / "s", "usesdep", "1.0", ["isadep>=0.1"]),
        pure_sdist(tmp_path / "s", "isadep", "0.1.0", []),
        pure_sdist(tmp_path / "s", "isadep", "0.2.0", []),
        pure_sdist(tmp_path / "s", "Old_Dep", "1.0", ["isadep"], mv="2.1", dynamic=True),
    ]
    with LocalIndex(sdists, {"isadep-0.2.0.tar.gz": ">=3.13"}) as idx:
        monkeypatch.setenv("CBUILD_PYPI_URL", idx.url)
        yield idx


def test_pypi_index_against_a_local_index(local_index: LocalIndex, tmp_path: Path) -> None:
    idx = PyPIIndex(tmp_path / "cache")
    assert sorted(c.version for c in idx.releases("isadep")) == ["0.1.0", "0.2.0"]
    assert idx.releases("old-dep")[0].name == "Old_Dep"
    assert idx.releases("nope") == []
    r = idx.requires("usesdep", "1.0")
    assert r.known and r.requirements == ("isadep>=0.1",)
    assert (tmp_path / "cache/sdists/usesdep-1.0.tar.gz").is_file()  # where the pipeline looks
    p = plan("usesdep", "1.0", r, [GENERIC], wheelhouse(), idx)
    # 0.2.0 needs Python 3.13: the target's 3.11 gets 0.1.0.
    assert order(p) == ["isadep==0.1.0", "usesdep==1.0"]
    assert not idx.requires("Old-Dep", "1.0").known


def test_listing_without_recursive_before_any_container(
    engine, local_index: LocalIndex, tmp_path: Path
) -> None:
    """`cbuild wheel` without --recursive: one warning a missing requirement, before the
    build, from the sdist's metadata. The recipe stops the run before any container."""
    from typer.testing import CliRunner

    from builder.cli import app as cli

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "usesdep.toml").write_text('[package]\nname = "usesdep"\npythons = "<3"\n')
    args = ["wheel", "usesdep", "1.0", "-t", "gentoo2023-generic", "--engine", "docker"]
    args += ["--wheelhouse", str(tmp_path / "wh"), "--recipes", str(recipes)]
    args += ["--cache", str(tmp_path / "cache")]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 2, res.output
    assert (
        "warning: usesdep needs isadep>=0.1, which the wheelhouse does not hold for "
        "gentoo2023-generic" in res.output
    )
    assert "builds for Python <3" in res.output
    # Held, by a local label, in the stack's generic folder: no warning.
    held = tmp_path / "wh/gentoo2023/generic" / f"isadep-0.1.0+computecanada-{CP311}.whl"
    held.parent.mkdir(parents=True)
    with zipfile.ZipFile(held, "w") as zf:
        zf.writestr(
            "isadep-0.1.0+computecanada.dist-info/METADATA", pkg_info("isadep", "0.1.0", "2.1")
        )
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 2 and "warning" not in res.output, res.output
