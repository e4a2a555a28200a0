"""Site configuration, read the way cibuildwheel reads `[tool.cibuildwheel]`: a `cbuild.toml`
(named by CBUILD_CONFIG, else the first found in the current folder or its parents), then
`CBUILD_*` variables over it, then a command's flags over both. Each value keeps where it came
from, for `cbuild config show`. The one owner of these defaults.

    # cbuild.toml: paths are relative to this file
    wheelhouse = "/project/wheelhouse"
    recipes = ["recipes"]        # searched first, in order; cbuild's built-in recipes last
    engine = "docker"            # docker | apptainer | auto
    provider = "auto"            # standalone | cvmfs | auto
    jobs = 4                     # targets at once (default: the cores)
    cache = "/scratch/cbuild"    # sdists, wheels, images' inputs, work folders
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from builder.data import data_path
from builder.errors import ConfigError

FILE_NAME = "cbuild.toml"
CONFIG_ENV = "CBUILD_CONFIG"
DEFAULT = "default"
# Each key's variable; CBUILD_RECIPES holds folders separated by os.pathsep, like PATH.
ENV = {
    "wheelhouse": "CBUILD_WHEELHOUSE",
    "recipes": "CBUILD_RECIPES",
    "engine": "CBUILD_ENGINE",
    "provider": "CBUILD_PROVIDER",
    "jobs": "CBUILD_JOBS",
    "cache": "CBUILD_CACHE",
}

T = TypeVar("T")


def builtin_recipes() -> Path:
    """The recipes that ship with cbuild (package data), searched after the site's."""
    return data_path("recipes")


@dataclass(frozen=True)
class Value(Generic[T]):
    value: T
    source: str  # "default", "<file>", "CBUILD_X" or "--flag"


@dataclass(frozen=True)
class Config:
    wheelhouse: Value[Path]
    recipes: Value[tuple[Path, ...]]  # the site's folders, first searched first
    engine: Value[str]
    provider: Value[str]
    jobs: Value[int | None]  # None: as many as the cores
    cache: Value[Path]
    file: Path | None = None  # the cbuild.toml read, if any

    @property
    def recipe_dirs(self) -> tuple[Path, ...]:
        """Where recipes are looked up, in order: the site's folders, then the built-in ones."""
        builtin = builtin_recipes()
        return (*(p for p in self.recipes.value if p != builtin), builtin)

    @property
    def new_recipe_dir(self) -> Path:
        """Where `cbuild recipe new` writes: the first site folder, else ./recipes."""
        return self.recipes.value[0] if self.recipes.value else Path("recipes").resolve()

    def with_flags(self, **flags: Any) -> Config:
        """These flags over the configuration; a flag left at None keeps its value."""
        changes = {}
        for key, value in flags.items():
            if value is None or (key == "recipes" and not value):
                continue
            if key == "recipes":
                value = tuple(Path(p).resolve() for p in value)
            elif key in ("wheelhouse", "cache"):
                value = Path(value).resolve()
            changes[key] = Value(_check(key, value, f"--{key}"), f"--{key}")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": str(self.file) if self.file else None}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Value):
                value = v.value
                if f.name == "recipes":
                    value = [str(p) for p in self.recipe_dirs]
                elif isinstance(value, Path):
                    value = str(value)
                out[f.name] = {"value": value, "source": v.source}
        out["recipes"]["builtin"] = str(builtin_recipes())
        return out


def find_file(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """CBUILD_CONFIG's file, else the nearest cbuild.toml from `cwd` upwards."""
    env = os.environ if env is None else env
    if named := env.get(CONFIG_ENV):
        path = Path(named).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(
                f"{CONFIG_ENV}={named}: no such file",
                fix=f"point {CONFIG_ENV} at a cbuild.toml, or unset it",
            )
        return path
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / FILE_NAME).is_file():
            return folder / FILE_NAME
    return None


def load_config(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The defaults, then the cbuild.toml found, then CBUILD_* variables."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    cfg = Config(
        wheelhouse=Value(Path("wheelhouse").resolve(), DEFAULT),
        recipes=Value((), DEFAULT),
        engine=Value("auto", DEFAULT),
        provider=Value("standalone", DEFAULT),
        jobs=Value(None, DEFAULT),
        cache=Value(home / ".cache" / "cbuild", DEFAULT),
    )
    path = find_file(cwd, env)
    if path is not None:
        cfg = replace(cfg, file=path, **_from_file(path))
    changes = {}
    for key, var in ENV.items():
        raw = env.get(var)
        if not raw:
            continue
        value: Any = raw
        if key == "recipes":
            value = tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p)
        elif key in ("wheelhouse", "cache"):
            value = Path(raw).expanduser().resolve()
        elif key == "jobs":
            value = _int(raw, var)
        changes[key] = Value(_check(key, value, var), var)
    return replace(cfg, **changes)


def _from_file(path: Path) -> dict[str, Value[Any]]:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}", fix="fix the file's syntax") from exc
    base, where = path.parent, str(path)
    out: dict[str, Value[Any]] = {}
    for key, value in data.items():
        if key not in ENV:
            close = difflib.get_close_matches(key, list(ENV), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{path}: unknown key {key!r}{hint}", fix=f"valid keys: {', '.join(ENV)}"
            )
        if key in ("wheelhouse", "cache"):
            value = (base / Path(_str(value, key, path)).expanduser()).resolve()
        elif key == "recipes":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                raise ConfigError(
                    f"{path}: recipes must be a list of folders", fix='recipes = ["recipes"]'
                )
            value = tuple((base / Path(_str(v, key, path)).expanduser()).resolve() for v in value)
        out[key] = Value(_check(key, value, where), where)
    return out


def _str(value: Any, key: str, path: Path) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{path}: {key} must be a string (a path), not {value!r}")
    return value


def _int(raw: str, where: str) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}={raw!r} is not a number", fix="e.g. 4") from exc


def _check(key: str, value: Any, where: str) -> Any:
    """One value's check, the same from every source; the error names the source."""
    # Engine and provider names are checked by their registries, when used.
    if key in ("engine", "provider") and not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a name, not {value!r}")
    if key == "jobs" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{where}: jobs must be a whole number >= 1, not {value!r}")
    return value
