"""The shell scripts of the steps (fetch, build, test) run inside the containers, rendered by
pure functions; the steps themselves live in builder.pipeline.

Every path is fixed (builder.images.paths): the same inputs give the same bytes whatever the
host's folders are called.
"""

from __future__ import annotations

import shlex

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
    TEST_ENV,
)
from builder.targets.cputest import python_shim_script

STEP_MARK = "::cbuild-step::"  # printed before each test step so a failure can be named
STEPS_VERSION = 4  # part of every build key: bump when a script changes what it builds
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
    after = [f"WHEEL=$(echo {OUT_DIR}/*.whl)"] if post_build else []
    for i, cmd in enumerate(post_build, 1):
        after += [f"echo {shlex.quote(f'{STEP_MARK} post_build {i}')}", cmd]
    return "\n".join(
        [
            "set -e",
            f"python3 -m venv --without-pip {BUILD_ENV}",
            f"{_pip(BUILD_ENV)} install --no-index --find-links {DEPS_DIR} -q {_q(build_requires)}",
            _unpack(f"{IN_DIR}/{sdist_name}", SRC_DIR),
            f"cd {shlex.quote(src)}",
            *recipe_lines,
            # setuptools >= 72 lets $CFLAGS replace Python's own (-DNDEBUG -fwrapv -g ...)
            # where older ones appended to them: keep Python's first, the target's after.
            f'export CFLAGS="$({BUILD_ENV}/bin/python -c {shlex.quote(_PY_CFLAGS)}) $CFLAGS"',
            f"{_pip(BUILD_ENV)} wheel --no-index --find-links {DEPS_DIR} --no-deps"
            f" --no-build-isolation -v -w {OUT_DIR} {_q(pip_args)} .",
            *after,
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
    """Fresh venv, install offline from the built wheel and fetched deps, then the tests,
    each step marked so that a failure names its step. Under QEMU, `python` is a shim that
    runs the venv's interpreter with exactly the level's CPU features."""
    wheels = [f"{IN_DIR}/{w}" for w in wheel_names]
    lines = [
        "set -e",
        f"echo '{STEP_MARK} install'",
        f"python3 -m venv --without-pip {TEST_ENV}",
        f"{_pip(TEST_ENV)} install --no-index --find-links {RT_DEPS_DIR} -q"
        f" {_q(wheels)} {_q(test_requires)}",
        f"mkdir -p {SHIM_DIR}",
    ]
    if qemu_cpu:
        shim = python_shim_script(QEMU_PATH, qemu_cpu, f"{TEST_ENV}/bin/python3")
        lines += [
            f"printf '%s' {shlex.quote(shim)} > {SHIM_DIR}/python",
            f"chmod +x {SHIM_DIR}/python && ln -sf python {SHIM_DIR}/python3",
        ]
    lines += [f"export PATH={SHIM_DIR}:{TEST_ENV}/bin:$PATH", "cd /tmp"]
    for i, cmd in enumerate(pre_commands, 1):
        lines += [f"echo {shlex.quote(f'{STEP_MARK} pre-test command {i}: {cmd}')}", cmd]
    for name in import_names:
        lines += [
            f"echo {shlex.quote(f'{STEP_MARK} import {name}')}",
            f"python -c {shlex.quote(f'import {name}')}",
        ]
    # A recipe's Python test code runs after importing its modules (legacy PYTHON_TESTS).
    imports = "".join(f"import {name}; " for name in import_names)
    for i, code in enumerate(python_code, 1):
        lines += [
            f"echo {shlex.quote(f'{STEP_MARK} python {i}: {code}')}",
            f"python -c {shlex.quote(imports + code)}",
        ]
    for i, cmd in enumerate(commands, 1):
        lines += [f"echo {shlex.quote(f'{STEP_MARK} command {i}: {cmd}')}", cmd]
    lines += [f"echo '{STEP_MARK} done'", ""]
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
