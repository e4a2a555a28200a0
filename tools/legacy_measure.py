"""Measure `cbuild recipe import-legacy` on a checkout of the legacy configs, differentially.

    .venv/bin/python tools/legacy_measure.py /path/to/wheels_builder [--json out.json] [-v]

Every `config/*.sh` is imported (one recipe per package, as the CLI does), each written recipe
checked, and then each config is sourced by bash with the legacy builder's environment stubbed
(PACKAGE, VERSION, EBVERSIONGENTOO, EBROOT*, `module`, build_wheel.sh's defaults), for each
stack year and each version its conditions name. Every legacy variable bash ends up with is
compared with the recipe resolved for that version and stack; a difference on a variable the
importer did not list as omitted is a silent defect, printed per file.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from packaging.utils import canonicalize_name  # noqa: E402

from builder.recipes import read_recipe  # noqa: E402
from builder.recipes.legacy import LEGACY_VARIABLES, import_configs, package_of  # noqa: E402
from builder.recipes.legacy.variables import LEGACY_ENV  # noqa: E402

STACKS = ("2020", "2023", "2026")
DEFAULT_VERSION = "99.1.0"
UNCHANGED = "__cbuild_default__"  # stub value of a default the config may replace
# What build_wheel.sh has set when it sources a config (see its text before `source`).
PRELUDE = r"""
module() { :; }
translate_version() { echo "$@" | awk -F. '{ printf("%d%03d%03d%03d\n", $1,$2,$3,$4); }'; }
THIS_SCRIPT=build_wheel.sh
SCRIPT_DIR=/legacy
YEAR=$EBVERSIONGENTOO
EBROOTGENTOO=/cvmfs/soft.computecanada.ca/gentoo/$EBVERSIONGENTOO/x86-64-v3/usr
EBVERSIONARCH=x86-64-v3
RSNT_ARCH=avx2
PYTHON_IMPORT_NAME="$PACKAGE"
PACKAGE_FOLDER_NAME="$PACKAGE"
PACKAGE_DOWNLOAD_NAME="$PACKAGE"
UPDATE_REQUIREMENTS=""
RPATH_TO_ADD=""
BDIST_WHEEL_ARGS=""
PIP_WHEEL_ARGS=""
PRE_DOWNLOAD_COMMANDS=""
PATCHES=""
PACKAGE_DOWNLOAD_CMD="pip download -v --no-cache --no-binary \$PACKAGE --no-use-pep517 \
--no-build-isolation --no-deps \$PACKAGE_DOWNLOAD_ARGUMENT"
PYTHON_DEPS_DEFAULT=__cbuild_default__
MODULE_BUILD_DEPS_DEFAULT=__cbuild_default__
PYTHON_VERSIONS=__cbuild_default__
PACKAGE_DOWNLOAD_ARGUMENT="$PACKAGE${VERSION:+==$VERSION}"
export TORCH_CUDA_ARCH_LIST="8.0;9.0+PTX"
export CUDAARCHS="80;90;90-virtual"
export CARGO_BUILD_JOBS=default
"""
SAFE_TOOLS = ("cat", "sed", "grep", "awk", "tr", "cut", "printf", "echo", "dirname", "basename",
              "head", "tail", "sort", "uniq", "expr", "true", "false", "env")  # fmt: skip
ENV_STUB = re.compile(r"\b(EBROOT[A-Z0-9_]+|EBVERSION(?!GENTOO)[A-Z0-9_]+|CPATH|LIBRARY_PATH|"
                      r"MKLROOT|CUDA_HOME|NIXUSER_PROFILE|LD_LIBRARY_PATH)\b")  # fmt: skip
SOURCE_VARS = {
    "PACKAGE_DOWNLOAD_ARGUMENT",
    "PACKAGE_DOWNLOAD_NAME",
    "PACKAGE_DOWNLOAD_METHOD",
    "PACKAGE_DOWNLOAD_CMD",
    "POST_DOWNLOAD_COMMANDS",
    "PACKAGE_FOLDER_NAME",
    "PRE_DOWNLOAD_COMMANDS",
}


@dataclass
class Case:
    config: Path
    package: str
    version: str
    stack: str


def cases(config: Path, siblings: set[str]) -> list[Case]:
    package, version = package_of(config)
    if version:
        return [Case(config, package, version, s) for s in STACKS]
    text = config.read_text()
    found = re.findall(r"VERSION\}?\"?\s*(?:==?|!=)\s*\"?(\d+(?:\.\d+)*)(\.\*)?", text)
    # translate_version comparisons: the boundary and a release just below it.
    for t in re.findall(r"translate_version ['\"]?(\d+(?:\.\d+)*)", text):
        parts = [int(p) for p in t.split(".")]
        i = max((i for i, p in enumerate(parts) if p), default=0)
        below = [*parts[:i], max(parts[i] - 1, 0), *[999] * (len(parts) - i - 1)]
        found += [(t, ""), (".".join(map(str, below)), "")]
    versions = [DEFAULT_VERSION, *dict.fromkeys(v + (".0" if g else "") for v, g in found)][:6]
    # build_wheel.sh sources <pkg>-<version>.sh instead, when there is one.
    versions = [v for v in versions if f"{package}-{v}".lower() not in siblings]
    return [Case(config, package, v, s) for v in versions for s in STACKS]


def source_in_bash(config: Path, todo: list[Case], tools: Path) -> list[dict[str, str] | None]:
    """Each case's legacy variables (and its new exports, as `export:NAME`) after sourcing."""
    text = config.read_text()
    stubs = "".join(f"export {n}=/stub/{n}\n" for n in sorted(set(ENV_STUB.findall(text))))
    names = sorted({*LEGACY_VARIABLES, "PYTHON_DEPS_DEFAULT", "MODULE_BUILD_DEPS_DEFAULT"})
    dump = (
        "for __v in " + " ".join(names) + '; do printf "%s\\0%s\\0" "$__v" "${!__v-}"; done\n'
        'for __v in $(compgen -e); do [[ " $__before " == *" $__v "* ]] || '
        'printf "export:%s\\0%s\\0" "$__v" "${!__v}"; done\n'
    )
    script = []
    for c in todo:
        script.append(
            "(\n"
            f"PACKAGE={shlex.quote(c.package)} VERSION={shlex.quote(c.version)} "
            f"EBVERSIONGENTOO={c.stack}\n{PRELUDE}{stubs}"
            '__before="$(compgen -e | tr "\\n" " ")"\n'
            f"__dump() {{\n{dump}}} >&3\nexec 3>&1\ntrap __dump EXIT\n"
            f"source {shlex.quote(str(config.resolve()))} >/dev/null 2>&1 </dev/null\n"
            ") 2>/dev/null\nprintf '\\1\\0'\n"
        )
    with tempfile.TemporaryDirectory() as work:
        try:
            res = subprocess.run(
                [
                    shutil.which("bash") or "/bin/bash",
                    "--noprofile",
                    "--norc",
                    "-c",
                    "".join(script),
                ],
                capture_output=True,
                cwd=work,
                env={"PATH": str(tools), "HOME": work, "LANG": "C.UTF-8"},
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            return [None] * len(todo)
    out: list[dict[str, str] | None] = []
    for chunk in res.stdout.decode(errors="replace").split("\1\0")[: len(todo)]:
        items = chunk.split("\0")
        values = dict(zip(items[0:-1:2], items[1::2], strict=False))
        out.append(values if values else None)
    return out + [None] * (len(todo) - len(out))


# --- the legacy meaning of each variable, and the recipe's ------------------------------------


def _statements(text: str) -> list[str]:
    """Shell text -> statements at `;`, `&&` and newlines outside quotes, whitespace-normalised."""
    out, cur, quote, i = [], [], None, 0
    while i < len(text):
        c = text[i]
        if quote:
            cur.append(c)
            if c == "\\" and quote == '"' and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c == "\\" and i + 1 < len(text):
            cur += [c, text[i + 1]]
            i += 1
        elif c in ";\n" or text.startswith("&&", i):
            out.append("".join(cur))
            cur = []
            i += 1 if c != "&" else 2
            continue
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return [" ".join(s.split()) for s in out if s.strip()]


def _expand_version(text: str, version: str) -> str:
    """$VERSION and the stubbed legacy environment (with their `:-default`s) expanded outside
    single quotes, as the shell does when it runs the text."""
    out, quote, i = [], None, 0
    var = re.compile(r"\$(?:\{(\w+)(:?-[^}]*)?\}|(\w+))")
    while i < len(text):
        c = text[i]
        m = var.match(text, i)
        if m and quote != "'" and (i == 0 or text[i - 1] != "\\"):
            name = m[1] or m[3]
            if name == "VERSION":
                out.append(version)
            elif ENV_STUB.fullmatch(name):
                out.append(f"/stub/{name}")
            elif LEGACY_ENV.fullmatch(name) and m[2]:
                out.append(m[2].lstrip(":-"))
            else:
                out.append(m[0])
            i += len(m[0])
            continue
        if c == "'" and quote in (None, "'"):
            quote = None if quote else "'"
        elif c == '"' and quote in (None, '"'):
            quote = None if quote else '"'
        out.append(c)
        i += 1
    return "".join(out)


def _split_env(stmts: list[str]) -> tuple[dict[str, str], list[str]]:
    env, rest = {}, []
    for s in stmts:
        m = re.fullmatch(r"export ([A-Za-z_]\w*)=(.*)", s)
        try:
            words = shlex.split(m[2]) if m else []
        except ValueError:
            words = []
        if m and len(words) == 1 and not rest:
            env[m[1]] = words[0]
        else:
            rest.append(s)
    return env, rest


def _wheel_edits(text: str) -> dict[str, list[str]] | None:
    edits: dict[str, list[str]] = {}
    for call in _statements(text):
        if call == "WHEEL_NAME=$(ls *.whl)":  # finds the edited wheel again
            continue
        try:
            args = shlex.split(call)
        except ValueError:
            return None
        if not args or not args[0].endswith("manipulate_wheels.py"):
            return None
        key = None
        for a in args[1:]:
            opts = {"-a": "add", "--add_req": "add", "-u": "update", "--update_req": "update",
                    "-r": "remove", "--remove_req": "remove"}  # fmt: skip
            if a in opts:
                key = opts[a]
            elif a.startswith("-"):
                key = None
            elif key:
                edits.setdefault(key, []).append(a)
    return edits


def legacy_view(v: dict[str, str], case: Case) -> dict[str, Any]:
    """What build_wheel.sh does with each variable, in comparable terms."""
    ver = case.version
    out: dict[str, Any] = {}
    default_deps = v.get("PYTHON_DEPS_DEFAULT", UNCHANGED)
    deps = ([] if default_deps == UNCHANGED else default_deps.split()) + v["PYTHON_DEPS"].split()
    # `pip install $PYTHON_DEPS`: split at blanks, quotes kept; into a fresh environment (as
    # cbuild's is), -U and -I change nothing.
    out["PYTHON_DEPS"] = [
        d for d in deps if d not in ("-U", "--upgrade", "-I", "--ignore-installed")
    ]
    mods = v.get("MODULE_BUILD_DEPS_DEFAULT", UNCHANGED)
    out["MODULE_BUILD_DEPS"] = ([] if mods == UNCHANGED else mods.split()) + v[
        "MODULE_BUILD_DEPS"
    ].split()
    out["MODULE_RUNTIME_DEPS"] = v["MODULE_RUNTIME_DEPS"].split()
    out["PATCHES"] = v["PATCHES"].split()
    exports = {k[7:]: x for k, x in v.items() if k.startswith("export:")}
    # PRE_DOWNLOAD_COMMANDS are eval'd in the shell that later builds: its exports reach the
    # build as if they began PRE_BUILD_COMMANDS.
    pre_dl = _statements(_expand_version(v["PRE_DOWNLOAD_COMMANDS"], ver))
    only_exports = all(re.match(r"export [A-Za-z_]\w*=", s) for s in pre_dl)
    pre = _statements(_expand_version(v["PRE_BUILD_COMMANDS"], ver))
    env, rest = _split_env((pre_dl if only_exports else []) + pre)
    out["env"] = {**exports, **env}
    out["PRE_BUILD_COMMANDS"] = rest
    out["PRE_DOWNLOAD_COMMANDS"] = [] if only_exports else pre_dl
    post = v["POST_BUILD_COMMANDS"].strip()
    edits: dict[str, list[str]] = {}
    if "manipulate_wheels.py" in post:
        edits = _wheel_edits(post) or {"unreadable": [post]}
        post = ""
    post = re.sub(r"\$\{?WHEEL_NAME\}?", "$WHEEL", _expand_version(post, ver))
    out["POST_BUILD_COMMANDS"] = _statements(post)
    pw = v["PATCH_WHEEL_COMMANDS"].strip()
    if pw:
        for k, x in (_wheel_edits(pw) or {"unreadable": [pw]}).items():
            edits.setdefault(k, []).extend(x)
    try:
        upd = shlex.split(v["UPDATE_REQUIREMENTS"])  # eval'd by log_command: quotes removed
    except ValueError:
        upd = [v["UPDATE_REQUIREMENTS"]]
    out["wheel_edits"] = {
        "add": edits.get("add", []),
        "remove": edits.get("remove", []),
        "update": [*upd, *edits.get("update", [])],
    }
    try:
        rp = shlex.split(v["RPATH_TO_ADD"])
    except ValueError:
        rp = [v["RPATH_TO_ADD"]]
    out["RPATH_TO_ADD"] = [p for w in rp for p in w.split(":") if p]
    out["RPATH_ADD_ORIGIN"] = bool(v["RPATH_ADD_ORIGIN"])  # any value, even 0, adds it
    test = v["TEST_COMMAND"].strip()
    name = v["PYTHON_IMPORT_NAME"]
    out["TEST_COMMAND"] = _statements(_expand_version(test, ver))
    if test or not name.strip():
        out["PYTHON_IMPORT_NAME"] = []
    elif name in (case.package, case.package.replace("-", "_")):
        out["PYTHON_IMPORT_NAME"] = None  # derived from the wheel, as the legacy guesses do
    else:
        out["PYTHON_IMPORT_NAME"] = name.replace(",", " ").split()
    tests = v["PYTHON_TESTS"].strip()
    out["PYTHON_TESTS"] = [] if test or not tests else [" ".join(tests.split())]
    out["PRE_TEST_COMMANDS"] = _statements(_expand_version(v["PRE_TEST_COMMANDS"], ver))
    out["PACKAGE_SUFFIX"] = v["PACKAGE_SUFFIX"]
    pys = v["PYTHON_VERSIONS"]
    out["PYTHON_VERSIONS"] = (
        None if pys == UNCHANGED else sorted(int(m) for m in re.findall(r"python/3\.(\d+)", pys))
    )
    try:
        args = shlex.split(v["PIP_WHEEL_ARGS"]) + [
            f"--build-option={a}" for a in shlex.split(v["BDIST_WHEEL_ARGS"])
        ]
    except ValueError:
        args = [v["PIP_WHEEL_ARGS"], v["BDIST_WHEEL_ARGS"]]
    out["PIP_WHEEL_ARGS"] = sorted(_pip_pairs(args))
    out["source"] = _legacy_source(v, case)
    return out


def _pip_pairs(args: list[str]) -> list[str]:
    pairs, i = [], 0
    while i < len(args):
        a = args[i]
        if a in ("-C", "--config-settings") and i + 1 < len(args):
            pairs.append(args[i + 1])
            i += 2
            continue
        pairs.append(a.removeprefix("--config-settings=").removeprefix("-C"))
        i += 1
    return pairs


def _legacy_source(v: dict[str, str], case: Case) -> dict[str, Any]:
    arg = v["PACKAGE_DOWNLOAD_ARGUMENT"].strip()
    cmd = v["PACKAGE_DOWNLOAD_CMD"].replace("$PACKAGE_DOWNLOAD_ARGUMENT", arg)
    cmd = cmd.replace("${PACKAGE_DOWNLOAD_ARGUMENT}", arg)
    src: dict[str, Any] = {}
    try:
        words = shlex.split(_expand_version(cmd, case.version))
    except ValueError:
        words = []
    if words[:2] == ["git", "clone"]:
        url = next((w for w in words[2:] if re.match(r"(https?|git|ssh)://|\S+@\S+:", w)), arg)
        rev = words[words.index("--branch") + 1] if "--branch" in words[:-1] else None
        return {"git": url.removesuffix(".git"), "rev": rev}
    if not cmd.startswith("pip download"):
        return {"cmd": cmd}
    arg = _expand_version(arg, case.version)
    m = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)/archive/(?:refs/tags/)?(.+?)"
                     r"\.(?:tar\.gz|zip|tgz)", arg)  # fmt: skip
    if m:
        return {"git": f"https://github.com/{m[1]}", "rev": m[2]}
    m = re.fullmatch(r"git\+(\S+?)(?:@([^#\s]+))?(?:#egg=\S+)?", arg)
    if m:
        return {"git": m[1].removesuffix(".git"), "rev": m[2]}
    if re.match(r"(https?|ftp)://", arg):
        return {"url": arg}
    name = re.split(r"[=<>~!\[ ]", arg, maxsplit=1)[0]
    src["name"] = canonicalize_name(name)
    return src


def recipe_view(r: Any, case: Case) -> dict[str, Any]:
    env, pre = _split_env(_statements(_expand_version("\n".join(r.pre_build), case.version)))
    names = None if r.import_names is None else list(r.import_names)
    if names == [case.package.replace("-", "_")]:
        names = None  # what the legacy default (the package's name) imports
    out: dict[str, Any] = {
        "PYTHON_DEPS": list(r.build_requires),
        "MODULE_BUILD_DEPS": list(r.modules),
        "MODULE_RUNTIME_DEPS": list(r.runtime_modules),
        "PATCHES": list(r.patches),
        "env": {**r.env, **env},
        "PRE_BUILD_COMMANDS": pre,
        "PRE_DOWNLOAD_COMMANDS": [],
        "POST_BUILD_COMMANDS": _statements(_expand_version("\n".join(r.post_build), case.version)),
        "wheel_edits": {
            "add": list(r.add_requires),
            "remove": list(r.remove_requires),
            "update": list(r.update_requires),
        },
        "RPATH_TO_ADD": list(r.rpath),
        "RPATH_ADD_ORIGIN": r.rpath_origin,
        "TEST_COMMAND": _statements(_expand_version("\n".join(r.test_commands), case.version)),
        "PYTHON_IMPORT_NAME": names,
        "PYTHON_TESTS": [" ".join(t.split()) for t in r.test_python],
        "PRE_TEST_COMMANDS": _statements(
            _expand_version("\n".join(r.test_pre_commands), case.version)
        ),
        "PACKAGE_SUFFIX": r.suffix,
        "PYTHON_VERSIONS": None
        if r.pythons is None
        else [m for m in range(0, 20) if r.builds_for_python(f"3.{m}")],
        "PIP_WHEEL_ARGS": sorted(
            f"{k}={v}" if k != "--build-option" else f"--build-option={v}"
            for k, v in r.config_settings
        ),  # fmt: skip
    }
    s = r.source
    if s.kind == "git":
        out["source"] = {"git": s.git.removesuffix(".git"), "rev": s.rev}
    elif s.kind == "url":
        out["source"] = {"url": s.url}
    else:
        out["source"] = {"name": canonicalize_name(s.pypi_name or r.name)}
    return out


# Which legacy variables each compared field comes from (to find the omission that covers it).
FIELD_VARS = {
    "PYTHON_DEPS": ("PYTHON_DEPS", "PYTHON_DEPS_DEFAULT"),
    "MODULE_BUILD_DEPS": ("MODULE_BUILD_DEPS", "MODULE_BUILD_DEPS_DEFAULT"),
    "env": ("export", "PRE_BUILD_COMMANDS", "PRE_DOWNLOAD_COMMANDS"),
    "wheel_edits": ("UPDATE_REQUIREMENTS", "POST_BUILD_COMMANDS", "PATCH_WHEEL_COMMANDS"),
    "PIP_WHEEL_ARGS": ("PIP_WHEEL_ARGS", "BDIST_WHEEL_ARGS"),
    "source": tuple(SOURCE_VARS),
    "PYTHON_IMPORT_NAME": ("PYTHON_IMPORT_NAME", "TEST_COMMAND"),
    "PYTHON_TESTS": ("PYTHON_TESTS", "TEST_COMMAND"),
}
# Omissions that hide what they cover (another script, a loop's body): any field may change.
COVERS_ALL = ("`exit` ends", "calls another script", "shell control flow", "a shell function",
              "unterminated")  # fmt: skip


COMMAND_FIELDS = ("PRE_BUILD_COMMANDS", "POST_BUILD_COMMANDS", "TEST_COMMAND",
                  "PRE_TEST_COMMANDS", "PRE_DOWNLOAD_COMMANDS")  # fmt: skip


def _words(command: str) -> str:
    """A command after quote removal: `'s/a/'"1.0"'/'` and `'s/a/1.0/'` are one word."""
    try:
        return shlex.join(shlex.split(command))
    except ValueError:
        return command


def _target(stack: str) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(id=f"gentoo{stack}-x86-64-v3", accelerator="cpu", python="3.11")


def measure(root: Path, verbose: bool) -> dict[str, Any]:
    configs = sorted((root / "config").glob("*.sh"))
    siblings = {p.stem.lower() for p in configs}
    groups: dict[str, list[Path]] = {}
    for c in configs:
        groups.setdefault(canonicalize_name(package_of(c)[0]), []).append(c)
    out = Path(tempfile.mkdtemp(prefix="legacy-measure-"))
    results, crashes = [], []
    for files in groups.values():
        try:
            results += import_configs(files, out, patches_dir=root / "patches", force=True)
        except Exception as exc:  # a crash is what this measures
            crashes.append({"configs": [f.name for f in files], "error": repr(exc)})
    tools = out / ".tools"
    tools.mkdir()
    for t in SAFE_TOOLS:
        for d in ("/usr/bin", "/bin"):
            if Path(d, t).exists():
                (tools / t).symlink_to(Path(d, t))
                break
    reasons: Counter[str] = Counter()
    defects: dict[str, list[str]] = {}
    resolve_errors: dict[str, str] = {}
    for r in results:
        for s in r.skipped:
            reasons[re.sub(r"'[^']*'|\$\w+|\d[\w.]*|\S+\.patch", "…", s.reason)[:90]] += 1
        if r.recipe is None or r.errors or any(s.line == 0 for s in r.skipped):
            continue  # not converted (a file build_wheel.sh cannot tell from another)
        todo = cases(r.config, siblings)
        for case, values in zip(todo, source_in_bash(r.config, todo, tools), strict=True):
            where = f"{r.config.name} (version {case.version}, gentoo{case.stack})"
            if values is None:
                defects.setdefault(r.config.name, []).append(f"{where}: bash did not finish")
                continue
            try:
                recipe = read_recipe(r.recipe, case.version).for_target(_target(case.stack))
            except Exception as exc:
                resolve_errors[r.config.name] = f"{where}: {exc}"
                continue
            lv, rv = legacy_view(values, case), recipe_view(recipe, case)
            for key, want in lv.items():
                got = rv.get(key)
                if key == "env":  # the legacy builder's own exports are not the config's
                    want = {k: x for k, x in want.items() if not _builder_export(k, x)}
                    got = {k: x for k, x in got.items() if not _builder_export(k, x)}
                if key in COMMAND_FIELDS and isinstance(got, list):  # after quote removal
                    got, want = [_words(c) for c in got], [_words(c) for c in want]
                if got == want:
                    continue
                names = FIELD_VARS.get(key, (key,))
                listed = any(
                    any(n in s.text for n in names) or s.reason.startswith(COVERS_ALL)
                    or (key == "env" and s.text.startswith("export "))
                    for s in r.skipped
                )  # fmt: skip
                if not listed:
                    defects.setdefault(r.config.name, []).append(
                        f"{where}: {key}: legacy {want!r} != recipe {got!r}"
                    )
    whole = [r for r in results if r.whole]
    silent = {n for n in defects}
    summary = {
        "configs": len(configs),
        "converted": len(results),
        "converted_whole": len(whole),
        "converted_whole_pct": round(100 * len(whole) / max(len(configs), 1), 1),
        "whole_and_no_defect": sum(r.config.name not in silent for r in whole),
        "omissions": sum(len(r.skipped) for r in results),
        "notes": sum(len(r.notes) for r in results),  # left out, without effect in bash
        "omissions_by_reason": dict(reasons.most_common()),
        "differential_defects": {k: v[:5] for k, v in sorted(defects.items())},
        "differential_defect_files": len(defects),
        "resolve_errors": resolve_errors,
        "crashes": crashes,
        "recipe_check_failures": {r.config.name: r.errors for r in results if r.errors},
    }
    if verbose:
        for r in results:
            for s in r.skipped:
                print(f"{r.config.name}:{s.line}: {s.text} -- {s.reason}")
            for s in r.notes:
                print(f"{r.config.name}:{s.line}: {s.text} -- note: {s.reason}")
    return summary


def _builder_export(name: str, value: str) -> bool:
    return (name, value) in {
        ("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX"),
        ("CUDAARCHS", "80;90;90-virtual"),
        ("CARGO_BUILD_JOBS", "default"),
    } or bool(ENV_STUB.fullmatch(name))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkout", type=Path, help="a checkout of ComputeCanada/wheels_builder")
    ap.add_argument("--json", type=Path, default=Path("legacy_measure.json"))
    ap.add_argument("-v", "--verbose", action="store_true", help="list every omission")
    args = ap.parse_args()
    summary = measure(args.checkout, args.verbose)
    for lines in summary["differential_defects"].values():
        for line in lines:
            print(f"DEFECT {line}")
    for key in ("resolve_errors", "recipe_check_failures"):
        for name, err in summary[key].items():
            print(f"{key.upper()} {name}: {err}")
    for c in summary["crashes"]:
        print(f"CRASH {c}")
    print("omissions by reason:")
    for reason, n in summary["omissions_by_reason"].items():
        print(f"  {n:5d}  {reason}")
    for k in ("configs", "converted", "converted_whole", "converted_whole_pct",
              "whole_and_no_defect", "omissions", "notes",
              "differential_defect_files"):  # fmt: skip
        print(f"{k}: {summary[k]}")
    print(f"crashes: {len(summary['crashes'])}")
    print(f"recipe_check_failures: {len(summary['recipe_check_failures'])}")
    args.json.write_text(json.dumps(summary, indent=1))
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
