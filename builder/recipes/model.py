"""The resolved recipe: `Recipe` and its `Source`, what the pipeline reads, and `TargetLike`, what
override matching needs of a target."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

from packaging.specifiers import SpecifierSet

from builder.recipes.checks import PATCHES_DIR
from builder.recipes.fields import PROVIDER_KEY_ALTERNATIVES, PROVIDER_KEYS, SECTIONS, Key


class TargetLike(Protocol):
    """What override matching needs of a target (builder.targets.Target has it)."""

    @property
    def id(self) -> str: ...

    accelerator: str
    python: str


@dataclass(frozen=True)
class Source:
    """Where the source comes from; `kind` is derived from the keys given."""

    kind: str = "pypi"  # pypi | url | git | wheel (PyPI's binary wheel, repackaged)
    pypi_name: str | None = None  # the project name on PyPI when it is not the recipe's name
    url: str | None = None
    sha256: str | None = None
    git: str | None = None
    rev: str | None = None  # tag or commit; pinned to a commit and archived at fetch time
    submodules: bool = False
    filename: str | None = None  # download name override
    folder: str | None = None  # top folder inside the archive, when not `<name>-<version>`


@dataclass(frozen=True)
class Recipe:
    name: str  # canonical (PEP 503) project name
    version: str  # the version this recipe was resolved for
    import_names: tuple[str, ...] | None = None  # None: derive from the wheel's top-level names
    build_requires: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, hash=False)  # [build] env
    test_requires: tuple[str, ...] = ()
    test_commands: tuple[str, ...] = ()
    path: Path | None = None  # the recipe file; None when the defaults apply
    pythons: str | None = None  # specifier of the Pythons to build for; None: all
    accelerators: tuple[str, ...] = ("cpu",)  # [package] accelerators
    cuda_archs: str | None = None  # [build] cuda_archs (CMake notation); None: the stack's
    source: Source = Source()
    patches: tuple[str, ...] = ()  # names under patches_dir, applied in order
    patches_dir: Path | None = None
    pre_build: tuple[str, ...] = ()
    post_build: tuple[str, ...] = ()
    config_settings: tuple[tuple[str, str], ...] = ()  # (key, value) pairs, -C key=value each
    build_once: bool = False  # pure/abi3: one build serves every target
    apt: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    runtime_modules: tuple[str, ...] = ()
    test_python: tuple[str, ...] = ()
    test_pre_commands: tuple[str, ...] = ()
    add_requires: tuple[str, ...] = ()
    remove_requires: tuple[str, ...] = ()
    update_requires: tuple[str, ...] = ()
    suffix: str = ""
    local_tags: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    rpath_origin: bool = False
    rpath_packages: tuple[str, ...] = ()  # [wheel] rpath_packages: "torch/lib", via $ORIGIN
    replace_vendored: tuple[str, ...] = ()  # [wheel] replace_vendored: patterns of <pkg>.libs/
    per_level: bool | None = None  # [wheel] per_level; None: placement decides by evidence
    target: str | None = None  # the target id this was resolved for; None: no target overrides
    _doc: Resolver | None = field(default=None, repr=False, compare=False, hash=False)

    def for_target(self, target: TargetLike) -> Recipe:
        """This recipe with the accelerator and target overrides of `target` applied."""
        if self._doc is None:
            return replace(self, target=target.id)
        return self._doc.resolve(self.version, target)

    @property
    def patch_files(self) -> tuple[Path, ...]:
        return tuple((self.patches_dir or Path(PATCHES_DIR)) / p for p in self.patches)

    @property
    def pip_args(self) -> tuple[str, ...]:
        """`pip wheel` options for the config settings (a list value repeats the key)."""
        return tuple(f"--config-settings={k}={v}" for k, v in self.config_settings)

    @property
    def wheel_edits(self) -> bool:
        return bool(
            self.add_requires or self.remove_requires or self.update_requires or self.suffix
        )

    def not_built_yet(self, local_source: bool = False) -> list[str]:
        """Fields this recipe uses that the build does not act on yet, each with why: a recipe
        that needs them must fail before building, not build something else silently.
        `local_source`: the source was given (--sdist), so [source] does not matter."""
        gaps = []
        if self.build_once:
            gaps.append(
                "[build] once: the build runs once for every target only when the sdist has no "
                "native sources, whatever the recipe says"
            )
        return gaps

    def not_honoured(self, who: str, honours: frozenset[str]) -> list[str]:
        """The provider keys (fields.PROVIDER_KEYS) this recipe sets that `who` ("the
        standalone provider"), which honours `honours`, would drop; [] when none."""
        gaps = []
        for dotted in sorted(PROVIDER_KEYS - honours):
            section, key = dotted.split(".")
            value = getattr(self, SECTIONS[section][key].attr)
            alt = PROVIDER_KEY_ALTERNATIVES.get(dotted, "").partition(".")
            if not value or (alt[2] and getattr(self, SECTIONS[alt[0]][alt[2]].attr)):
                continue  # unset, or the image gets its own way (pyfftw: apt and modules)
            shown = ", ".join(value) if isinstance(value, tuple) else value
            gaps.append(f"[{section}] {key} ({shown}) is not honoured by {who}")
        return gaps

    def builds_for_accelerator(self, accelerator: str) -> bool:
        return accelerator in self.accelerators

    def builds_for_python(self, python: str) -> bool:
        return self.pythons is None or SpecifierSet(self.pythons).contains(python, True)

    def as_dict(self) -> dict[str, Any]:
        """The resolved recipe in the file's own shape (sections and keys), for `recipe show`."""
        out: dict[str, Any] = {"package": {"name": self.name}}
        for section, keys in SECTIONS.items():
            for key, spec in keys.items():
                if (section, key) == ("package", "name"):
                    continue
                value = _file_value(spec, self)
                if value is not None:
                    out.setdefault(section, {})[key] = value
        out["resolved_for"] = {"version": self.version, "target": self.target}
        return out


class Resolver(Protocol):
    """What a recipe keeps of its file to resolve it again for a target (resolve.Document)."""

    def resolve(self, version: str, target: TargetLike | None = None) -> Recipe: ...


_DEFAULTS: dict[str, Any] = {
    **{f.name: f.default for f in fields(Recipe) if f.default is not MISSING},
    **{f"source.{f.name}": f.default for f in fields(Source)},
    "env": {},
}


def _file_value(key: Key, recipe: Recipe) -> Any:
    """The resolved value of `key` as the file would write it; None when it is the default."""
    if key.attr == "source.kind":  # binary_wheel
        return True if recipe.source.kind == "wheel" else None
    obj: Any = recipe
    attr = key.attr
    if attr.startswith("source."):
        obj, attr = recipe.source, attr.removeprefix("source.")
    value = getattr(obj, attr)
    if value == _DEFAULTS[key.attr] and key.attr != "import_names":
        return None
    if attr == "config_settings":
        table: dict[str, list[str]] = {}
        for k, v in value:
            table.setdefault(k, []).append(v)
        return {k: v[0] if len(v) == 1 else v for k, v in table.items()}
    return list(value) if isinstance(value, tuple) else value
