"""The shell scripts of the steps (fetch, build, test) run inside the containers, rendered by
pure functions; the steps themselves live in builder.pipeline.

Every path is fixed (builder.images.paths): the same inputs give the same bytes whatever the
host's folders are called.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import Protocol

from builder.images.paths import (
    BUILD_ENV,
    DEPS_DIR,
    IN_DIR,
    OUT_DIR,
    PATCHES_DIR,
    QEMU_PATH,
    RT_DEPS_DIR,
    SHIM_DIR,
    SRC_DIR,
    STORE_DIR,
    TEST_ENV,
    TOOLS_DIR,
    TOOLS_ENV,
)
from builder.targets.binfmt import RULES, UNAVAILABLE, launcher_source


class Pinned(Protocol):
    """A locked file (builder.sources.pypi.LockEntry has these)."""

    name: str
    version: str
    sha256: str


STEP_MARK = "::cbuild-step::"  # printed before each test step so a failure can be named
STEPS_VERSION = 5  # part of every build key: bump when a script changes what it builds
PATCH_FAILED = "::cbuild-patch-failed::"


_PY_CFLAGS = "import sysconfig; print(sysconfig.get_config_var('CFLAGS') or '')"
_UNZIP = "import shutil, sys; shutil.unpack_archive(sys.argv[1], sys.argv[2])"


def _unpack(archive: str, dest: str) -> str:
    """tar for tarballs (Python's tarfile takes ~4 s on biopython's), Python for a .zip."""
    if archive.endswith(".zip"):
        return f"python3 -c {shlex.quote(_UNZIP)} {shlex.quote(archive)} {dest}"
    return f"mkdir -p {dest} && tar -xf {shlex.quote(archive)} -C {dest} --no-same-owner"


def _pip(venv: str) -> str:
    """The image's pip driving a venv made --without-pip: ensurepip costs ~4 s per venv."""
    return f"python3 -m pip --python {venv}/bin/python"


def _q(words: list[str] | tuple[str, ...]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def fetch_wheels_script(requirements: list[str], dest: str, extra: list[str] = ()) -> str:
    """Download binary wheels for the image's Python (network on); never build anything here."""
    reqs = _q([*requirements, *extra])
    return f"set -e\npython3 -m pip download --only-binary=:all: --dest {dest} {reqs}\n"


def hashed_requirements(entries: Iterable[Pinned]) -> str:
    """A requirements file for pip's hash-checking mode: `name==version --hash=sha256:...`,
    one line per locked file (pip then refuses any file with another sha256, store or index)."""
    return "".join(f"{e.name}=={e.version} --hash=sha256:{e.sha256}\n" for e in entries)


def build_script(
    sdist_name: str,
    top_folder: str,
    build_requires: list[str],
    pip_args: tuple[str, ...] = (),
    *,
    patches: tuple[str, ...] = (),
    pre_build: tuple[str, ...] = (),
    post_build: tuple[str, ...] = (),
    version: str = "",
) -> str:
    """Offline build: a venv at a fixed path with the pinned build deps, then pip wheel in-tree.
    A recipe's patches (mounted at PATCHES_DIR) apply in order after unpacking; its pre-build
    and post-build commands run in the source folder in this same shell, so an `export` or a
    `cd` carries on to the build. $VERSION is the version; after the build, $WHEEL the wheel."""
    after = [f"WHEEL=$(echo {OUT_DIR}/*.whl)"] if post_build else []
    for i, cmd in enumerate(post_build, 1):
        after += [f"echo {shlex.quote(f'{STEP_MARK} post_build {i}')}", cmd]
    return "\n".join(
        [
            *_build_env_and_source(
                sdist_name, top_folder, build_requires, patches, pre_build, version, post_build
            ),
            # setuptools >= 72 lets $CFLAGS replace Python's own (-DNDEBUG -fwrapv -g ...)
            # where older ones appended to them: keep Python's first, the target's after.
            f'export CFLAGS="$({BUILD_ENV}/bin/python -c {shlex.quote(_PY_CFLAGS)}) $CFLAGS"',
            # The build requirements' programs (swig, cython, cmake, ninja) found by name, as
            # pip's isolated builds find them (CMake missed SWIG and left a module out); the
            # image's python3 drives pip, found before PATH changes (the venv has no pip).
            f'PATH={BUILD_ENV}/bin:$PATH "$(command -v python3)" -m pip'
            f" --python {BUILD_ENV}/bin/python wheel --no-index --find-links {DEPS_DIR} --no-deps"
            f" --no-build-isolation -v -w {OUT_DIR} {_q(pip_args)} .",
            *after,
            "",
        ]
    )


def _build_env_and_source(
    sdist_name: str,
    top_folder: str,
    build_requires: list[str],
    patches: tuple[str, ...],
    pre_build: tuple[str, ...],
    version: str,
    post_build: tuple[str, ...] = (),
) -> list[str]:
    """The build's venv with its requirements from DEPS_DIR, and the source unpacked, patched
    and prepared (pre-build commands), the shell in its folder: the build and the fetch step's
    backend query start the same way."""
    src = f"{SRC_DIR}/{top_folder}"
    recipe_lines = [f"VERSION={shlex.quote(version)}"] if pre_build or post_build else []
    for name in patches:
        p = shlex.quote(name)
        recipe_lines += [
            f"echo {shlex.quote(f'{STEP_MARK} patch {name}')}",
            f"patch -p1 --batch --forward --no-backup-if-mismatch -i {PATCHES_DIR}/{p} || {{"
            f" echo {shlex.quote(f'{PATCH_FAILED} {name}')};"
            " find . -name '*.rej' -exec cat {} +; exit 1; }",
        ]
    for i, cmd in enumerate(pre_build, 1):
        recipe_lines += [f"echo {shlex.quote(f'{STEP_MARK} pre_build {i}')}", cmd]
    return [
        "set -e",
        f"python3 -m venv --without-pip {BUILD_ENV}",
        f"{_pip(BUILD_ENV)} install --no-index --find-links {DEPS_DIR} -q {_q(build_requires)}",
        _unpack(f"{IN_DIR}/{sdist_name}", SRC_DIR),
        f"cd {shlex.quote(src)}",
        *recipe_lines,
    ]


# pypa/build, in a venv of its own: only the fetch step runs it, to ask the backend.
BUILD_FRONTEND = "build==1.2.2.post1"
BACKEND_MARK = "::cbuild-backend-requires::"
# Run by the frontend's venv in the prepared source: the backend's own requirements for a
# wheel (PEP 517 get_requires_for_build_wheel, run by the build's venv), and those of them
# the build's venv does not satisfy, written one a line to argv[2].
_BACKEND_PROBE = f"""\
import json, subprocess, sys
from build import ProjectBuilder
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
env, out = sys.argv[1], sys.argv[2]
asked = sorted(ProjectBuilder(".", python_executable=env).get_requires_for_build("wheel"))
code = ("import importlib.metadata as m, json; "
        "print(json.dumps([(d.metadata['Name'], d.version) for d in m.distributions()]))")
installed = json.loads(subprocess.check_output([env, "-c", code]))
have = {{canonicalize_name(n): v for n, v in installed}}
def met(text):
    r = Requirement(text)
    if r.marker is not None and not r.marker.evaluate({{"extra": ""}}):
        return True
    v = have.get(canonicalize_name(r.name))
    return v is not None and r.specifier.contains(Version(v), prereleases=True)
missing = [r for r in asked if not met(r)]
open(out, "w").write("".join(r + "\\n" for r in missing))
print("{BACKEND_MARK}" + json.dumps({{"asked": asked, "missing": missing}}))
"""


def backend_requires_script(
    sdist_name: str,
    top_folder: str,
    build_requires: list[str],
    *,
    patches: tuple[str, ...] = (),
    pre_build: tuple[str, ...] = (),
    version: str = "",
    offline: bool = False,
) -> str:
    """Fetch step, network on: the build's venv and source as the build makes them, then what
    the backend asks for besides (pypa/build's ProjectBuilder, in TOOLS_ENV); what the venv
    lacks is downloaded into DEPS_DIR beside the build's requirements. `offline`: from
    DEPS_DIR only (a rebuild's locked files): a requirement missing there is an error."""
    index = " --no-index" if offline else ""
    missing = f"{TOOLS_DIR}/missing.txt"
    return "\n".join(
        [
            "set -e",
            f"python3 -m pip download --only-binary=:all: -q --dest {TOOLS_DIR}"
            f" --find-links {STORE_DIR} {shlex.quote(BUILD_FRONTEND)}",
            f"python3 -m venv --without-pip {TOOLS_ENV}",
            f"{_pip(TOOLS_ENV)} install --no-index --find-links {TOOLS_DIR} -q"
            f" {shlex.quote(BUILD_FRONTEND)}",
            *_build_env_and_source(
                sdist_name, top_folder, build_requires, patches, pre_build, version
            )[1:],
            f"{TOOLS_ENV}/bin/python -c {shlex.quote(_BACKEND_PROBE)} {BUILD_ENV}/bin/python"
            f" {missing}",
            f"if [ -s {missing} ]; then python3 -m pip download --only-binary=:all:"
            f" --dest {DEPS_DIR} --find-links {DEPS_DIR} --find-links {STORE_DIR}{index}"
            f" -r {missing}; fi",
            "",
        ]
    )


def patch_failure(output: str) -> str | None:
    """The rejected hunks a failed patch printed (build_script), or None."""
    if PATCH_FAILED not in output:
        return None
    text = output[output.rindex(PATCH_FAILED) + len(PATCH_FAILED) :].strip()
    name, _, hunks = text.partition("\n")
    return f"patch {name} does not apply; rejected hunks:\n" + "\n".join(
        "    " + ln for ln in hunks.rstrip().splitlines()
    )


def under_level(qemu_cpu: str, body: str) -> list[str]:
    """Shell lines that run the script `body` (with "$@") with every process of it under QEMU
    with the CPU model `qemu_cpu` (builder.targets.binfmt): a static-pie launcher built from
    source, registered in a binfmt_misc private to a user and mount namespace. Where that cannot
    be set up they print UNAVAILABLE and what failed, and exit 125: nothing runs natively."""
    d = SHIM_DIR
    # builtins only: after the rules are registered, every program runs through the launcher
    fail = (
        f"{{ a=; b=; while IFS= read -r l; do a=$b; b=$l; done < {d}/err;"
        f' echo "{UNAVAILABLE} $1: $a $b"; exit 125; }}'
    )
    inner = "\n".join(
        [
            f"mount -t binfmt_misc cbuild {d}/binfmt 2> {d}/err"
            f" || no 'mount -t binfmt_misc in a user namespace (Linux >= 6.7)'",
            f'for rule in {d}/rule-*; do cat "$rule" > {d}/binfmt/register 2> {d}/err'
            ' || no "binfmt_misc refused the rule in ${rule##*/}"; done',
            # a first program through the launcher: QEMU starts in this container
            f"/bin/true 2> {d}/err || no 'a program under the QEMU launcher did not start'",
            f'exec sh {d}/body.sh "$@"',
        ]
    )
    lines = [
        "ulimit -c 0",  # QEMU would write a core file for every SIGILL
        f"mkdir -p {d}/binfmt",
        f"no() {fail}",
        f"printf '%s' {shlex.quote(launcher_source(QEMU_PATH, qemu_cpu))} > {d}/launcher.c",
        *(
            f"printf '%s' {shlex.quote(r.register(f'{d}/launcher'))} > {d}/rule-{i}"
            for i, r in enumerate(RULES)
        ),
        f"printf '%s' {shlex.quote(body)} > {d}/body.sh",
        f": > {d}/err; command -v cc > /dev/null || no 'no C compiler (cc) in the image'",
        f"cc -static-pie -O2 -o {d}/launcher {d}/launcher.c 2> {d}/err"
        " || no 'cc -static-pie could not build the QEMU launcher'",
        f"unshare -Urm true 2> {d}/err || no 'unshare -Urm (user and mount namespaces)'",
        f"exec unshare -Urm sh -c {shlex.quote(f'no() {fail}' + chr(10) + inner)} cbuild-level"
        ' "$@"',
    ]
    return lines


def wheel_test_script(
    wheel_names: list[str],
    import_names: list[str],
    commands: list[str],
    test_requires: list[str],
    qemu_cpu: str | None,
    *,
    python_code: tuple[str, ...] = (),
    pre_commands: tuple[str, ...] = (),
) -> str:
    """Fresh venv, install offline from the built wheel and fetched deps (natively: pip under
    QEMU is slow), then the tests, each step marked so that a failure names its step. With
    `qemu_cpu`, every process of the tests runs under QEMU with exactly that CPU model."""
    wheels = [f"{IN_DIR}/{w}" for w in wheel_names]
    lines = [
        "set -e",
        f"echo '{STEP_MARK} install'",
        f"python3 -m venv --without-pip {TEST_ENV}",
        f"{_pip(TEST_ENV)} install --no-index --find-links {RT_DEPS_DIR} -q"
        f" {_q(wheels)} {_q(test_requires)}",
    ]
    body = ["set -e", f"export PATH={TEST_ENV}/bin:$PATH", "cd /tmp"]
    for i, cmd in enumerate(pre_commands, 1):
        body += [f"echo {shlex.quote(f'{STEP_MARK} pre-test command {i}: {cmd}')}", cmd]
    for name in import_names:
        body += [
            f"echo {shlex.quote(f'{STEP_MARK} import {name}')}",
            f"python -c {shlex.quote(f'import {name}')}",
        ]
    # A recipe's Python test code runs after importing its modules (legacy PYTHON_TESTS).
    imports = "".join(f"import {name}; " for name in import_names)
    for i, code in enumerate(python_code, 1):
        body += [
            f"echo {shlex.quote(f'{STEP_MARK} python {i}: {code}')}",
            f"python -c {shlex.quote(imports + code)}",
        ]
    for i, cmd in enumerate(commands, 1):
        body += [f"echo {shlex.quote(f'{STEP_MARK} command {i}: {cmd}')}", cmd]
    body += [f"echo '{STEP_MARK} done'", ""]
    if qemu_cpu:
        lines += [f"echo '{STEP_MARK} level'", *under_level(qemu_cpu, "\n".join(body)), ""]
    else:
        lines += body[1:]
    return "\n".join(lines)


def failed_step(output: str) -> str:
    """The last step marker before a failure: what was running when it failed."""
    steps = [ln.split(STEP_MARK, 1)[1].strip() for ln in output.splitlines() if STEP_MARK in ln]
    return steps[-1] if steps else "start"


def failure_excerpt(output: str, errors: int = 8, tail: int = 6) -> str:
    """What a person needs from a failed build's log: the compiler's own error lines (pip's
    verbose output buries them) and the last lines."""
    lines = [ln for ln in output.rstrip().splitlines() if not ln.startswith("::cbuild-")]
    found = [ln for ln in lines if "error:" in ln or "Error:" in ln][:errors]
    last = [ln for ln in lines[-tail:] if ln not in found]
    return "\n".join("    " + ln.strip() for ln in [*found, *last])
