"""Targets: stack x CPU level x accelerator x Python, with stable ids and derived folders.

Stacks are data files in `builder/targets/stacks/`; this module only reads and combines them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

from builder.errors import ConfigError
from builder.targets.gpu import GpuArchs
from builder.targets.levels import Level, level


@dataclass(frozen=True)
class Stack:
    name: str
    local_label: str
    baseline_level: str
    levels: tuple[str, ...]
    pythons: tuple[str, ...]
    cuda: tuple[str, ...]
    pure_folder: str
    generic_folder: str
    level_folder: str
    providers: dict[str, dict[str, Any]] = field(hash=False, compare=False)
    cuda_levels: tuple[str, ...] = ()  # the levels that get a target per CUDA version
    cuda_archs: tuple[tuple[str, str], ...] = ()  # ("12", CMake notation): the defaults

    def folder_for_level(self, name: str) -> str:
        return self.generic_folder if name == "generic" else self.level_folder.format(level=name)

    @property
    def default_python(self) -> str:
        """The Python of the ids without a suffix: the stack's first."""
        return self.pythons[0]

    def accelerators(self, level_name: str) -> tuple[str, ...]:
        """A level's accelerators: cpu, then `cudaNN` for each CUDA where the level gets one."""
        cuda = self.cuda if level_name in self.cuda_levels else ()
        return ("cpu", *(f"cuda{c}" for c in cuda))

    def gpu_archs(self, cuda: str) -> GpuArchs:
        """The GPU architectures a `cuda<cuda>` target promises by default."""
        archs = dict(self.cuda_archs)
        if cuda not in archs:
            raise ConfigError(
                f"stack {self.name!r} names no GPU architectures for CUDA {cuda}",
                fix=f'add "{cuda}" to cuda_archs in its stack file',
            )
        return GpuArchs.parse_cmake(archs[cuda])

    def provider_pythons(self, provider: str) -> tuple[str, ...]:
        """The Pythons a provider builds for here (its `pythons`; else the stack's), the
        provider's own facts read from its table (builder.providers reads them the same way)."""
        return tuple(self.providers.get(provider, {}).get("pythons", self.pythons))


def python_suffix(version: str) -> str:
    """The id suffix of a Python: "3.13" -> "py313"."""
    return "py" + version.replace(".", "")


@dataclass(frozen=True)
class Target:
    stack: Stack
    level_name: str  # "generic" or a CPU level name
    accelerator: str = "cpu"  # "cpu" | "cuda12" | ...
    python: str = "3.11"
    provider: str = "standalone"

    @property
    def id(self) -> str:
        """`gentoo2023-x86-64-v3[-cuda12][-py313]`: the stack's default Python (its first)
        has no suffix, so every id made before the Python axis names the same target."""
        base = f"{self.stack.name}-{self.level_name}"
        if self.accelerator != "cpu":
            base += f"-{self.accelerator}"
        if self.python != self.stack.default_python:
            base += f"-{python_suffix(self.python)}"
        return base

    @property
    def python_tag(self) -> str:
        """The interpreter's wheel tag: "cp313"."""
        return "cp" + self.python.replace(".", "")

    @property
    def cuda(self) -> str | None:
        """The CUDA major version of a CUDA target ("12"), None for a CPU one."""
        return self.accelerator.removeprefix("cuda") if self.accelerator != "cpu" else None

    @property
    def is_generic(self) -> bool:
        return self.level_name == "generic"

    @property
    def cpu_level(self) -> Level:
        """The CPU level the wheel promises: a generic build promises the stack's baseline."""
        return level(self.stack.baseline_level if self.is_generic else self.level_name)

    @property
    def folder(self) -> str:
        return self.stack.folder_for_level(self.level_name)

    def compiler_flags(self) -> dict[str, str]:
        """CFLAGS/CXXFLAGS/FFLAGS/LDFLAGS for the level (archspec), with the ISA note recorded."""
        lv = self.cpu_level
        opt = f"-O2 {lv.cflags()}"
        ld = lv.ld_isa_flag or ""
        return {"CFLAGS": opt, "CXXFLAGS": opt, "FFLAGS": opt, "LDFLAGS": ld}

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stack": self.stack.name,
            "level": self.level_name,
            "cpu_level": self.cpu_level.name,
            "accelerator": self.accelerator,
            "python": self.python,
            "provider": self.provider,
            "folder": self.folder,
            "flags": self.compiler_flags(),
            # a CUDA target's default GPU architectures (CMake notation); a recipe may narrow
            **({"gpu_archs": self.stack.gpu_archs(self.cuda).cmake()} if self.cuda else {}),
        }


@cache
def load_stack(name: str) -> Stack:
    path = resources.files("builder.targets") / "stacks" / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(
            f"unknown stack {name!r}", fix=f"known stacks: {', '.join(stack_names())}"
        )
    data = tomllib.loads(path.read_text())
    return Stack(
        name=data["name"],
        local_label=data["local_label"],
        baseline_level=data["baseline_level"],
        levels=tuple(data["levels"]),
        pythons=tuple(data["pythons"]),
        cuda=tuple(data.get("cuda", ())),
        pure_folder=data["pure_folder"],
        generic_folder=data["generic_folder"],
        level_folder=data["level_folder"],
        providers=data.get("providers", {}),
        cuda_levels=tuple(data.get("cuda_levels", ())),
        cuda_archs=tuple(sorted(data.get("cuda_archs", {}).items())),
    )


def stack_names() -> list[str]:
    folder = resources.files("builder.targets") / "stacks"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def all_targets(
    provider: str = "standalone",
    accelerators: tuple[str, ...] | None = ("cpu",),
    pythons: tuple[str, ...] | None = None,
) -> list[Target]:
    """Every target of a provider: each level x each of its Pythons (`pythons` narrows
    them), the stack's default Python first; `accelerators` None: every accelerator the stack
    gives each level (its CUDA variants, `Stack.accelerators`), else only those named. Whether
    the provider can build one *here* is its own question (Provider.unavailable)."""
    out = []
    for name in stack_names():
        stack = load_stack(name)
        offered = stack.provider_pythons(provider)
        for py in offered if pythons is None else [p for p in offered if p in pythons]:
            for lv in stack.levels:
                out += [
                    Target(stack, lv, acc, py, provider)
                    for acc in stack.accelerators(lv)
                    if accelerators is None or acc in accelerators
                ]
    return out


def check_pythons(pythons: tuple[str, ...], provider: str = "standalone") -> None:
    """Each of `pythons` is one some stack's provider offers."""
    offered = {p for n in stack_names() for p in load_stack(n).provider_pythons(provider)}
    if unknown := [p for p in pythons if p not in offered]:
        raise ConfigError(
            f"no stack offers Python {', '.join(unknown)} with the {provider} provider",
            fix=f"use --python {' or '.join(sorted(offered))}",
        )


def resolve(
    ids: list[str], provider: str = "standalone", pythons: tuple[str, ...] = ()
) -> list[Target]:
    """Targets by id. With `pythons`, each id stands for its level and accelerator on each
    of them (`-t gentoo2023-x86-64-v3 --python 3.13` is `gentoo2023-x86-64-v3-py313`); an id
    with the default Python's own suffix (`-py311`) names the unsuffixed target."""
    check_pythons(pythons, provider)
    every = all_targets(provider, accelerators=None)
    known = {t.id: t for t in every}
    for t in every:
        known.setdefault(f"{t.id}-{python_suffix(t.python)}", t)
    unknown = [i for i in ids if i not in known]
    if unknown:
        listed = [t.id for t in every]
        raise ConfigError(
            f"unknown target id {', '.join(map(repr, unknown))}",
            fix=f"use one of: {', '.join(listed)} (see `cbuild targets`)",
        )
    picked = [known[i] for i in ids]
    if pythons:
        picked = [replace(t, python=p) for t in picked for p in pythons]
    return list(dict.fromkeys(picked))


def github_matrix(targets: list[Target]) -> dict[str, Any]:
    """What `strategy.matrix: ${{ fromJSON(...) }}` takes: an `include` list, one job per target."""
    return {
        "include": [
            {
                "target": t.id,
                "python": t.python,
                "level": t.cpu_level.name,
                "accelerator": t.accelerator,
            }
            for t in targets
        ]
    }
