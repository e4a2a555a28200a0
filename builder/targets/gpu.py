"""GPU architectures a CUDA target promises its wheels carry: parsed, rendered to each build
system's convention, and checked against what a toolkit knows (`nvcc --list-gpu-code`).

An architecture is a compute capability without its dot (80 = 8.0), optionally suffixed `a`
(arch-specific: sm_90a runs on 9.0 only) or `f` (family: sm_100f runs on 10.x). SASS runs on
its architecture (and later minors of the same major); PTX is compiled by the driver for its
architecture and every later one, the forward-compatibility path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from builder.errors import ConfigError

_ARCH = re.compile(r"^(\d{2,3})([af]?)$")
_KNOWN = re.compile(r"\b(sm|compute)_(\d{2,3})[af]?\b")


def _arch_key(arch: str) -> tuple[int, str]:
    m = _ARCH.match(arch)
    assert m, arch
    return int(m.group(1)), m.group(2)


def _norm(archs: tuple[str, ...] | list[str], what: str) -> tuple[str, ...]:
    out = set()
    for a in archs:
        a = str(a).strip().removeprefix("sm_").removeprefix("compute_")
        if not _ARCH.match(a):
            raise ConfigError(
                f"{what}: {a!r} is not a GPU architecture",
                fix="write a compute capability without its dot: 80, 90, 90a, 100f",
            )
        out.add(a)
    return tuple(sorted(out, key=_arch_key))


@dataclass(frozen=True)
class GpuArchs:
    """Real architectures (SASS) and virtual ones (PTX), sorted, each once."""

    sass: tuple[str, ...]
    ptx: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "sass", _norm(self.sass, "SASS"))
        object.__setattr__(self, "ptx", _norm(self.ptx, "PTX"))
        if not self.sass and not self.ptx:
            raise ConfigError("no GPU architecture given", fix="name at least one, e.g. 80;90")

    @classmethod
    def of(cls, sass: str, ptx: str = "") -> GpuArchs:
        """`GpuArchs.of("80;90", ptx="90")`: semicolon- or comma-separated lists."""
        return cls(_split(sass), _split(ptx))

    @classmethod
    def parse_cmake(cls, text: str) -> GpuArchs:
        """CMake's notation (CMAKE_CUDA_ARCHITECTURES, CUDAARCHS): `80-real` is SASS, `90-virtual`
        is PTX, and a plain `90` both, as CMake reads it."""
        sass: list[str] = []
        ptx: list[str] = []
        for item in _split(text):
            if item in ("native", "all", "all-major"):
                raise ConfigError(
                    f"CUDA architecture {item!r} depends on the build machine or the toolkit",
                    fix="name the architectures, e.g. 80-real;90-real;90-virtual",
                )
            arch, _, kind = item.partition("-")
            if kind not in ("", "real", "virtual"):
                raise ConfigError(f"{item!r}: CMake knows only -real and -virtual")
            if kind != "virtual":
                sass.append(arch)
            if kind != "real":
                ptx.append(arch)
        return cls(tuple(sass), tuple(ptx))

    # ------------------------------------------------------------------ conventions

    def cmake(self) -> str:
        """CMAKE_CUDA_ARCHITECTURES / CUDAARCHS: exactly these, nothing implied."""
        out = []
        for a in self._all():
            both = a in self.sass and a in self.ptx
            out.append(a if both else f"{a}-real" if a in self.sass else f"{a}-virtual")
        return ";".join(out)

    def torch(self) -> str:
        """TORCH_CUDA_ARCH_LIST (`8.0;9.0+PTX`). Torch cannot say PTX without SASS: a PTX-only
        architecture is written `+PTX` and so also gets SASS."""
        return ";".join(f"{_dotted(a)}+PTX" if a in self.ptx else _dotted(a) for a in self._all())

    def gencode(self) -> tuple[str, ...]:
        """nvcc flags, one `-gencode` per architecture."""
        flags = []
        for a in self._all():
            codes = [f"sm_{a}"] if a in self.sass else []
            codes += [f"compute_{a}"] if a in self.ptx else []
            code = codes[0] if len(codes) == 1 else f"[{','.join(codes)}]"
            flags.append(f"-gencode=arch=compute_{a},code={code}")
        return tuple(flags)

    def describe(self) -> str:
        """`sm_80, sm_90 + PTX compute_90`: how reports and messages name them."""
        parts = ", ".join(f"sm_{a}" for a in self.sass)
        ptx = ", ".join(f"compute_{a}" for a in self.ptx)
        return " + PTX ".join(p for p in (parts, ptx) if p) if parts else f"PTX {ptx}"

    def _all(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.sass) | set(self.ptx), key=_arch_key))


def _split(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in re.split(r"[;,\s]+", text or "") if p.strip())


def _dotted(arch: str) -> str:
    n, suffix = _arch_key(arch)
    return f"{n // 10}.{n % 10}{suffix}"


def check_known(archs: GpuArchs, listing: str) -> tuple[str, ...]:
    """What in `archs` a toolkit does not know, from the text of `nvcc --list-gpu-code` (sm_XY
    lines; `--list-gpu-arch`'s compute_XY lines are read the same way). Suffixed architectures
    are judged by their number. Empty: every one is known."""
    known = {int(m.group(2)) for m in _KNOWN.finditer(listing)}
    if not known:
        return ("the toolkit listed no GPU architecture (is this `nvcc --list-gpu-code`?)",)
    span = f"it knows {_span(known)}"
    problems = [
        f"sm_{a} is not known to this toolkit ({span})"
        for a in archs.sass
        if _arch_key(a)[0] not in known
    ]
    problems += [
        f"compute_{a} (PTX) is not known to this toolkit ({span})"
        for a in archs.ptx
        if _arch_key(a)[0] not in known
    ]
    return tuple(problems)


def _span(known: set[int]) -> str:
    lo, hi = min(known), max(known)
    return f"sm_{lo} to sm_{hi}" if lo != hi else f"sm_{lo} only"
