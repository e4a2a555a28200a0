"""How to test a wheel built for a CPU level on this host, and what the test's outcome means.

A wheel promises a CPU level. The only run that proves the promise is one on a CPU with exactly
that level's features: QEMU user mode gives one (`qemu-x86_64-static -cpu qemu64,+avx,...`) for
every level up to x86-64-v3, for every process of the test through a private binfmt_misc
(builder.targets.binfmt). QEMU's TCG cannot execute AVX-512 under any CPU model, so an
x86-64-v4 wheel can only run natively, on a host that has AVX-512, and a host always has more
than the level (ADX, SHA, ...): a native pass proves less. Where neither works the test is not
run, and says why; it is never reported as passed.

Everything here but `qemu_binary`, `usable_qemu` and `plan_here` is pure: the host's features and
the presence of QEMU are arguments.
"""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import archspec.cpu

from builder.targets.binfmt import ESCAPES, RULES, UNAVAILABLE
from builder.targets.levels import QEMU_UNSUPPORTED, Level, host_features

Mode = Literal["qemu", "native", "none"]
Status = Literal["passed", "failed", "isa-leak", "not-run"]

# Part of every run key: bump when the level test starts proving more (or less), so that a run
# recorded under a weaker test is not "up to date". 2: every process under QEMU (binfmt_misc).
TEST_METHOD_VERSION = 2
QEMU_NAMES = ("qemu-x86_64-static", "qemu-x86_64")
NO_QEMU = "QEMU (qemu-x86_64-static) is not available"
SETUP_FIX = (
    "run the test on Linux >= 6.7 with user namespaces allowed in the container "
    "(binfmt_misc is private to a user namespace from 6.7 on)"
)

SIGILL_EXIT_CODES = frozenset({128 + signal.SIGILL, -signal.SIGILL})  # shell/engine, subprocess
QEMU_SIGILL_MESSAGE = "uncaught target signal 4 (Illegal instruction)"  # qemu-user's own report
ILLEGAL_INSTRUCTION = "Illegal instruction"  # the shell's report of a child killed by SIGILL
GLIBC_ISA_MESSAGE = "CPU ISA level is lower than required"  # ld.so refusing an ELF ISA note

_SHOWN_EXTRAS = 6  # how many of the host's extra features a reason names


@dataclass(frozen=True)
class CpuTestPlan:
    mode: Mode
    qemu_cpu: str | None  # the `-cpu` argument when mode == "qemu"
    reason: str  # a sentence that completes "tested ..." / says why it is not run

    @property
    def runs(self) -> bool:
        return self.mode != "none"

    @property
    def exact(self) -> bool:
        """Whether a pass proves the level: only an exact-feature CPU model does."""
        return self.mode == "qemu"

    def wrap(self, argv: list[str], qemu: str | Path) -> list[str]:
        """The command line that runs `argv` (an x86-64 executable and its arguments) as planned."""
        if self.mode == "qemu":
            assert self.qemu_cpu is not None
            return [str(qemu), "-cpu", self.qemu_cpu, *argv]
        if self.mode == "native":
            return list(argv)
        raise ValueError(f"this test is not run: {self.reason}")


@dataclass(frozen=True)
class TestVerdict:
    __test__ = False  # not a pytest test class, despite its name

    status: Status
    detail: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _names(features: frozenset[str] | set[str], limit: int | None = None) -> str:
    names = sorted(features)
    if limit is not None and len(names) > limit:
        return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"
    return ", ".join(names)


@cache
def _isa_features() -> frozenset[str]:
    """Features some x86-64 microarchitecture in archspec needs: instruction sets, not `apic`."""
    out: set[str] = set()
    for target in archspec.cpu.TARGETS.values():
        if target.family.name == "x86_64":
            out |= target.features
    return frozenset(out)


def _unemulable(level: Level) -> str:
    missing = level.features & QEMU_UNSUPPORTED
    if all(f.startswith("avx512") for f in missing):
        return "AVX-512"
    return _names(missing)


def plan_cpu_test(
    level: Level, host_features: frozenset[str], qemu_available: bool, no_qemu: str = NO_QEMU
) -> CpuTestPlan:
    """Exact emulation of every process when QEMU can emulate the level and is usable (else
    nothing, with `no_qemu` as the reason: a native pass of an emulable level proves nothing
    about it); a native run on a host that has a level QEMU cannot emulate; else nothing."""
    if level.qemu_emulable:
        if qemu_available:
            return CpuTestPlan(
                "qemu",
                level.qemu_cpu,
                f"under QEMU with exactly {level.name}'s features, every process of the test "
                f"({ESCAPES})",
            )
        return CpuTestPlan("none", None, f"{no_qemu}: {level.name} code is tested only under it")
    lacking = level.features - host_features
    extra = (host_features & _isa_features()) - level.features
    why = "QEMU cannot emulate " + _unemulable(level)
    if not lacking:
        more = f"and more ({_names(extra, _SHOWN_EXTRAS)})" if extra else "(and maybe more)"
        return CpuTestPlan(
            "native",
            None,
            f"natively on this host, which has {level.name} {more}: a native run proves less "
            f"than the exact level; {why}",
        )
    return CpuTestPlan(
        "none",
        None,
        f"{why} and this host lacks {_names(lacking)}: {level.name} code cannot be run here",
    )


def raw_host_features() -> frozenset[str]:
    """Every feature this CPU reports, in archspec's spelling (`pni` is `sse3`).

    `levels.host_features()` gives the features of the microarchitecture archspec names for the
    host, which can be far fewer (a VM's CPU matched to `x86_64_v4` lacks ADX, SHA, ...)."""
    try:
        from archspec.cpu.detect import detected_info

        return frozenset(detected_info().features) | host_features()
    except Exception:  # archspec's raw detection is not a stable API
        return host_features()


def plan_here(level: Level) -> CpuTestPlan:
    """`plan_cpu_test` for this host and its QEMU."""
    qemu, why = usable_qemu()
    return plan_cpu_test(level, raw_host_features(), qemu is not None, why)


def not_run(plan: CpuTestPlan) -> TestVerdict:
    """The verdict of a test the plan does not run: reported with its reason, never as passed."""
    return TestVerdict("not-run", f"not run: {plan.reason}")


def _where(plan: CpuTestPlan, level: Level) -> str:
    if plan.mode == "qemu":
        return f"under an exact {level.name} CPU"
    return f"natively on this host (which has all of {level.name})"


def _line_with(output: str, needle: str) -> str:
    return next((ln.strip() for ln in output.splitlines() if needle in ln), needle)


def interpret(exit_code: int, output: str, plan: CpuTestPlan, level: Level) -> TestVerdict:
    """What a test run's exit code and output (stdout and stderr together) mean for the level.

    SIGILL (exit 132 from a shell or engine, -4 from `subprocess`, or QEMU's own report) means
    instructions above the level; so does glibc refusing a library whose ELF ISA note requires a
    higher level, even when the test suite turned the ImportError into a skip and exited 0.
    """
    if plan.mode == "none":
        raise ValueError(f"nothing was run to interpret: {plan.reason}")
    if UNAVAILABLE in output:  # the script could not put the test's processes under QEMU
        what = _line_with(output, UNAVAILABLE).split(UNAVAILABLE, 1)[1]
        return TestVerdict(
            "not-run",
            f"not tested: could not run every process under QEMU: {' '.join(what.split())}; "
            f"fix: {SETUP_FIX}",
        )
    where = _where(plan, level)
    if GLIBC_ISA_MESSAGE in output:
        return TestVerdict(
            "isa-leak",
            f"glibc refused a library {where}: its ELF ISA note requires a level above "
            f"{level.name} ({_line_with(output, GLIBC_ISA_MESSAGE)})",
        )
    if (
        exit_code in SIGILL_EXIT_CODES
        or QEMU_SIGILL_MESSAGE in output
        or (exit_code != 0 and ILLEGAL_INSTRUCTION in output)
    ):
        return TestVerdict(
            "isa-leak",
            f"SIGILL {where}: the wheel uses instructions above {level.name}",
        )
    if exit_code == 0:
        if plan.exact:
            return TestVerdict("passed", f"passed {plan.reason}")
        return TestVerdict(
            "passed", f"passed {where}: a native pass proves less than the exact level"
        )
    if exit_code < 0:
        try:
            how = f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            how = f"killed by signal {-exit_code}"
    else:
        how = f"exit code {exit_code}"
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "")
    return TestVerdict("failed", f"tests failed {where}: {how}" + (f": {last}" if last else ""))


def qemu_binary() -> Path | None:
    """QEMU user mode for x86-64: the static build first (it can be mounted into a container),
    then the dynamic one (host use only), from PATH or /usr/bin."""
    for name in QEMU_NAMES:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin")
        if found:
            return Path(found)
    return None


def _is_dynamic(binary: Path) -> bool:
    """Whether an ELF has a PT_INTERP program header (it needs ld.so and its libraries)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with binary.open("rb") as fh:
            return any(s["p_type"] == "PT_INTERP" for s in ELFFile(fh).iter_segments())
    except (OSError, ELFError):
        return False


def usable_qemu() -> tuple[Path | None, str]:
    """QEMU that can run inside a container (static) and that no binfmt rule would send back to
    the launcher, or None and why not."""
    qemu = qemu_binary()
    if qemu is None:
        return None, f"{NO_QEMU}; fix: apt-get install qemu-user-static"
    try:
        with qemu.open("rb") as fh:
            header = fh.read(128)
    except OSError as exc:
        return None, f"QEMU at {qemu} cannot be read ({exc.strerror})"
    if _is_dynamic(qemu):
        return None, (
            f"QEMU at {qemu} is dynamically linked and cannot run inside the container; "
            "fix: apt-get install qemu-user-static (the static build)"
        )
    if rule := next((r for r in RULES if r.matches(header)), None):
        return None, (
            f"QEMU at {qemu} matches the binfmt rule for {rule.what}, so it would start itself "
            "again without end; fix: a static-pie QEMU (Debian's qemu-user-static is one)"
        )
    return qemu, ""
