"""A private binfmt_misc that runs every x86-64 program of a test under QEMU at one CPU level.

binfmt_misc is namespaced per user namespace (Linux >= 6.7): inside `unshare -Urm`, a fresh
binfmt_misc mount takes rules that only that namespace's processes see, so the test's own
interpreter, a child started through `sys.executable`, a console script, a `multiprocessing`
worker and a program shipped in the wheel all start under QEMU. The rules send x86-64
executables to a small static launcher that execs QEMU with the level's CPU model compiled in
(not read from the environment: a child that clears its environment stays at the level).

Neither the launcher nor QEMU may match a rule (the kernel would loop): both are static-pie
(ET_DYN, OS/ABI GNU, no PT_PHDR). What escapes: static-pie glibc executables (the same shape) and
programs started through the dynamic loader by name (`ld-linux-x86-64.so.2 PROG`).
Everything here is pure.
"""

from __future__ import annotations

from dataclasses import dataclass

LAUNCHER_NAME = "cbuild-qemu-launcher"
# Printed by the step's script, with what failed, when it cannot set this up: the test is then
# "not tested", never passed natively.
UNAVAILABLE = "::cbuild-no-binfmt::"
ESCAPES = (
    "static-pie glibc executables and programs started through the dynamic loader by name "
    "(ld-linux-x86-64.so.2 PROG) run natively"
)
_HEADER = 68  # e_ident .. the first program header's p_type (e_phoff is 64 in practice)


@dataclass(frozen=True)
class Rule:
    name: str
    what: str  # which executables it sends to QEMU, in words
    magic: bytes
    mask: bytes

    def matches(self, header: bytes) -> bool:
        """Whether the kernel would hand an executable starting with `header` to this rule."""
        head = header[: len(self.magic)].ljust(len(self.magic), b"\0")
        return all(h & m == g & m for h, g, m in zip(head, self.magic, self.mask, strict=True))

    def register(self, interpreter: str) -> str:
        """The line written to binfmt_misc's `register`: flags P (argv[0] kept, passed after the
        file's path) and F (the interpreter opened now, so it need not exist in later mounts)."""
        esc = "".join(f"\\x{b:02x}" for b in self.magic)
        msk = "".join(f"\\x{b:02x}" for b in self.mask)
        return f":{self.name}:M:0:{esc}:{msk}:{interpreter}:PF"


def _rule(name: str, what: str, fields: dict[int, bytes]) -> Rule:
    magic, mask = bytearray(_HEADER), bytearray(_HEADER)
    for off, value in {0: b"\x7fELF\x02\x01\x01", 18: b"\x3e\x00", **fields}.items():
        magic[off : off + len(value)] = value
        mask[off : off + len(value)] = b"\xff" * len(value)
    end = max(i for i, m in enumerate(mask) if m) + 1
    return Rule(name, what, bytes(magic[:end]), bytes(mask[:end]))


RULES = (
    # The first program header is PT_PHDR (6) in every dynamically linked executable.
    _rule("cbuild-dynamic", "dynamically linked executables", {64: b"\x06\x00\x00\x00"}),
    # OS/ABI SYSV (0): static executables without GNU extensions (Go, musl), and most others.
    _rule("cbuild-sysv", "executables of OS/ABI SYSV (Go, musl)", {7: b"\x00"}),
    # ET_EXEC (2): static non-PIE executables, glibc's included.
    _rule("cbuild-static", "static non-PIE executables", {16: b"\x02\x00"}),
)


def _c_string(text: str) -> str:
    if any(c in text for c in '"\\\n') or not text.isprintable():
        raise ValueError(f"not a plain C string: {text!r}")
    return f'"{text}"'


def launcher_source(qemu: str, qemu_cpu: str) -> str:
    """The C source of the launcher binfmt_misc runs (compile with `cc -static-pie`).

    With flag P the kernel calls it as [launcher, FILE, ARGV0, ARGS...]; it execs
    [QEMU, -cpu, CPU, -0, ARGV0, FILE, ARGS...]."""
    return f"""\
/* cbuild: run an x86-64 program under QEMU user mode with exactly one CPU level's features. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static const char qemu[] = {_c_string(qemu)};
static const char cpu[] = {_c_string(qemu_cpu)};
int main(int argc, char **argv)
{{
    if (argc < 3 || strcmp(argv[1], qemu) == 0) {{
        fputs("{LAUNCHER_NAME}: not called by binfmt_misc for another program\\n", stderr);
        return 127;
    }}
    char *args[argc + 4];
    int n = 0;
    args[n++] = (char *)qemu;
    args[n++] = "-cpu";
    args[n++] = (char *)cpu;
    args[n++] = "-0";
    args[n++] = argv[2];
    args[n++] = argv[1];
    for (int i = 3; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    execv(qemu, args);
    perror("{LAUNCHER_NAME}: exec qemu");
    return 127;
}}
"""


def launcher_argv(qemu: str, qemu_cpu: str, binfmt_argv: list[str]) -> list[str]:
    """What the launcher execs for the argv binfmt_misc gives it (its C code does the same)."""
    _launcher, file, argv0, *args = binfmt_argv
    return [qemu, "-cpu", qemu_cpu, "-0", argv0, file, *args]
