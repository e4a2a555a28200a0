"""CPU levels: names, feature sets, compiler flags and QEMU CPU models, all derived from archspec.

A level the site adds is a new archspec microarchitecture name in the stack data, not new code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import archspec.cpu

# archspec feature names that QEMU spells differently; the rest are the same word.
_QEMU_NAMES = {
    "sse4_1": "sse4.1",
    "sse4_2": "sse4.2",
    "lahf_lm": "lahf-lm",
}
# QEMU's TCG emulates up to AVX2; none of these can be executed under any CPU model.
QEMU_UNSUPPORTED = frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})


@dataclass(frozen=True)
class Level:
    name: str  # e.g. "x86-64-v3"
    archspec_name: str  # e.g. "x86_64_v3"
    features: frozenset[str]

    def cflags(self, compiler: str = "gcc", version: str = "12.2") -> str:
        return archspec.cpu.TARGETS[self.archspec_name].optimization_flags(compiler, version)

    @property
    def ld_isa_flag(self) -> str | None:
        """Records the level in the ELF ISA note, so glibc refuses the library on a lower CPU
        with a clear message instead of a later SIGILL."""
        return f"-Wl,-z,{self.name}" if self.name.startswith("x86-64-v") else None

    @property
    def qemu_emulable(self) -> bool:
        return not (self.features & QEMU_UNSUPPORTED)

    @property
    def qemu_cpu(self) -> str:
        """A QEMU CPU model with exactly this level's features on top of the plain qemu64."""
        extra = sorted(
            _QEMU_NAMES.get(f, f) for f in self.features if f not in {"mmx", "sse", "sse2"}
        )
        return ",".join(["qemu64", *(f"+{f}" for f in extra)])


@cache
def level(name: str) -> Level:
    """`x86-64-v3` or its archspec spelling `x86_64_v3`; `x86-64` is the plain baseline."""
    archspec_name = name.replace("-", "_")
    if archspec_name not in archspec.cpu.TARGETS:
        known = ", ".join(
            n.replace("_", "-") for n in archspec.cpu.TARGETS if n.startswith("x86_64")
        )
        raise KeyError(f"unknown CPU level {name!r}; archspec knows {known}")
    target = archspec.cpu.TARGETS[archspec_name]
    return Level(
        name=archspec_name.replace("_", "-"),
        archspec_name=archspec_name,
        features=frozenset(target.features),
    )


def host_features() -> frozenset[str]:
    return frozenset(archspec.cpu.host().features)


def host_has(lv: Level) -> bool:
    return lv.features <= host_features()
