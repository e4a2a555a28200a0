"""Apptainer through spython: SIF images in a cache folder, named by their definition's hash.

Images are built in two stages so that targets share their base the way Docker shares a layer:
a base SIF (bootstrap and packages) and one small SIF per target on top of it (steps,
environment, labels); see builder.images.apptainer. An unchanged definition is never rebuilt.

Steps run like the Docker engine's: `--containall --cleanenv`, only the step's mounts bound, the
network off (`--net --network none`) unless the step fetches, `--fakeroot` so the step is root in
its container as under Docker, and a throw-away `--overlay` folder as the writable layer (a SIF
is read-only; the build writes its venv and sources under /cbuild). An installation that
refuses `--network none` is an error, unless `--allow-host-network` (CBUILD_ALLOW_HOST_NETWORK=1)
accepts the host's network, which each manifest then records (`network_isolated: false`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import spython
from spython.main import Client
from spython.utils import stream_command

from builder.cache import Cache, default_cache
from builder.engines.base import ALLOW_HOST_NETWORK_ENV, Progress, RunResult, RunSpec
from builder.errors import EngineError
from builder.files import copy_atomic
from builder.images.apptainer import (
    base_stage_key,
    debootstrap_header,
    definition_hash,
    docker_header,
    render_base_stage,
    render_target_stage,
)
from builder.images.python import ensure
from builder.images.spec import BaseImage, ImageSpec

# --overlay of a plain folder without setuid, and --mksquashfs-args, both came with 1.1.0.
MIN_VERSION = (1, 1, 0)
MIN_VERSION_WHY = "unprivileged --overlay of a folder and build --mksquashfs-args"
# lz4 squashes a SIF about 4x faster than the default gzip (15 s against 70 s for a target
# stage here) for a 25% larger file: images are rebuilt far more often than they are shipped.
SQUASH_ARGS = "-comp lz4"
MIN_FREE = 3 * 2**30  # a base SIF (~450 MB) plus its build's unpacked copy, with a margin

NO_APPTAINER_FIX = """install Apptainer >= 1.1 (https://apptainer.org/docs/admin/main/installation.html),
  or on a machine with Podman and none, start the test harness (a real Apptainer in a container):
    bash ci/apptainer-harness.sh start && eval "$(bash ci/apptainer-harness.sh env)\""""

# Apptainer's build log names the section it is in; the last one seen is the one that failed.
_SECTION_MARKS = (
    ("Running setup scriptlet", "%setup"),
    ("Running post scriptlet", "%post"),
    ("Running testscript", "%test"),
    ("Adding labels", "%labels"),
    ("Adding environment to container", "%environment"),
    ("Adding runscript", "%runscript"),
    ("Creating SIF file", "SIF creation (mksquashfs)"),
)
_NO_SUBUID = "User not listed in /etc/subuid"
_NETWORK_REFUSED = re.compile(r"network.*(not allowed|not permitted|requires root)", re.I)


def network_refused(output: str) -> bool:
    """Whether Apptainer's own error lines (FATAL/ERROR) say the network setup was refused."""
    return any(
        _NETWORK_REFUSED.search(line)
        for line in output.splitlines()
        if line.lstrip().startswith(("FATAL", "ERROR"))
    )


def allow_host_network_default() -> bool:
    """CBUILD_ALLOW_HOST_NETWORK=1 (what `--allow-host-network` sets): the only way a step
    runs with the host's network where Apptainer refuses `--network none`."""
    return os.environ.get(ALLOW_HOST_NETWORK_ENV, "").strip().lower() in ("1", "true", "yes")


def parse_version(text: str) -> tuple[str, tuple[int, int, int]]:
    """`apptainer version 1.4.5-1` -> ("apptainer", (1, 4, 5)); flavour "" when unknown."""
    m = re.search(r"(apptainer|singularity-ce|singularity)\s+version\s+(\d+)\.(\d+)\.(\d+)", text)
    if not m:
        return "", (0, 0, 0)
    return m.group(1), (int(m.group(2)), int(m.group(3)), int(m.group(4)))


def check_version(text: str) -> str:
    """The version text when cbuild can use it, else an EngineError naming what it needs."""
    flavour, ver = parse_version(text)
    need = ".".join(map(str, MIN_VERSION))
    fix = f"install Apptainer >= {need} (Debian: from sid/trixie; or apptainer.org's packages)"
    if flavour != "apptainer":
        raise EngineError(
            f"{text.strip() or 'the singularity command'} is not Apptainer: cbuild needs "
            f"Apptainer >= {need} ({MIN_VERSION_WHY})",
            fix=fix,
        )
    if ver < MIN_VERSION:
        raise EngineError(
            f"Apptainer {'.'.join(map(str, ver))} is too old: cbuild needs Apptainer >= {need} "
            f"({MIN_VERSION_WHY})",
            fix=fix,
        )
    return text.strip()


def failing_section(log_text: str) -> str:
    """The definition section Apptainer was in when a build failed ('the bootstrap' before any)."""
    section = "the bootstrap (header)"
    for line in log_text.splitlines():
        for mark, name in _SECTION_MARKS:
            if mark in line:
                section = name
    return section


def subuid_fix(probe_output: str) -> str | None:
    """The /etc/subuid and /etc/subgid lines a user without a fakeroot mapping lacks."""
    if _NO_SUBUID not in probe_output:
        return None
    uid = re.search(r"\[U=(\d+),", probe_output)
    home = re.search(r"/home/([^/\s]+)/\.apptainer", probe_output)
    who = home.group(1) if home else (uid.group(1) if uid else str(os.getuid()))
    return (
        f"/etc/subuid and /etc/subgid have no line for {who}"
        + (f" (uid {uid.group(1)})" if uid else "")
        + f"; add `{who}:100000:65536` to both (as root: usermod --add-subuids 100000-165535 "
        f"--add-subgids 100000-165535 {who})"
    )


def registry_host(ref: str) -> str:
    """The host serving an image reference, as Docker reads one (no host part: Docker Hub)."""
    first = ref.split("/", 1)[0]
    host = first if "/" in ref and ("." in first or ":" in first or first == "localhost") else ""
    return "registry-1.docker.io" if host in ("", "docker.io") else host


def registry_answers(ref: str, timeout: float = 5) -> bool:
    """Whether the registry serving `ref` answers at all (any HTTP status, 401 included)."""
    host = registry_host(ref)
    try:
        urllib.request.urlopen(f"https://{host}/v2/", timeout=timeout)
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def default_store() -> Path:
    if os.environ.get("CBUILD_APPTAINER_IMAGES"):
        return Path(os.environ["CBUILD_APPTAINER_IMAGES"])
    return Cache(default_cache()).apptainer


class ApptainerEngine:
    name = "apptainer"
    # `--network` for a step cut off; the tests name one Apptainer refuses, to see a refusal.
    isolation = "none"

    def __init__(
        self,
        store: Path | None = None,
        min_free: int = MIN_FREE,
        *,
        allow_host_network: bool | None = None,
    ) -> None:
        if not shutil.which("singularity"):  # spython's name for it; Apptainer installs both
            found = "apptainer is on PATH but " if shutil.which("apptainer") else ""
            raise EngineError(
                f"no Apptainer: {found}no `singularity` command on PATH", fix=NO_APPTAINER_FIX
            )
        answer = Client.version()
        if isinstance(answer, dict):  # spython's shape for a command that failed
            raise EngineError(
                "`singularity --version` failed: "
                + "".join(answer.get("message", [])).strip()[:300],
                fix=NO_APPTAINER_FIX,
            )
        self.version = check_version(answer or "")
        self.store = (store or default_store()).resolve()
        self.min_free = min_free
        self.fakeroot = True  # known after the probe: whether Apptainer runs as non-root
        self.network_isolated = True  # until the installation refuses --network none
        # Only then, and only when asked, do steps run with the host's network.
        self.allow_host_network = (
            allow_host_network_default() if allow_host_network is None else allow_host_network
        )
        self._probed = False
        self._registry: dict[str, bool] = {}
        self._lock = threading.RLock()  # the pipeline runs targets in threads; builds probe
        # Every run's scratch folder starts with it: stop_all finds this engine's processes.
        self.session = uuid.uuid4().hex[:12]

    def describe(self) -> str:
        iso = "" if self.network_isolated else ", network NOT isolated (--network none refused)"
        return f"{self.version} (spython {spython.__version__}{iso})"

    # --- images -------------------------------------------------------------------------------
    def image_exists(self, tag: str) -> bool:
        """A SIF path, or a spec tag (`localhost/cbuild/<target>:<spec hash>`) built here."""
        return Path(self._index().get(tag, tag)).is_file()

    def image_id(self, tag: str) -> str:
        sif = Path(self._index().get(tag, tag))
        side = sif.with_name(sif.name + ".sha256")
        if side.is_file() and side.stat().st_mtime >= sif.stat().st_mtime:
            return side.read_text().strip()
        digest = hashlib.sha256()
        with sif.open("rb") as fh:
            while chunk := fh.read(2**20):
                digest.update(chunk)
        side.write_text(f"sha256:{digest.hexdigest()}\n")
        return f"sha256:{digest.hexdigest()}"

    def list_images(self) -> list[dict[str, str]]:
        rows = []
        for tag, sif in sorted(self._index().items()):
            if Path(sif).is_file():
                target, _, spec_hash = tag.removeprefix("localhost/cbuild/").partition(":")
                rows.append(
                    {"tag": sif, "id": self.image_id(sif), "target": target, "spec_hash": spec_hash}
                )
        return rows

    def _index(self) -> dict[str, str]:
        path = self.store / "index.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def base_header(self, base: BaseImage, progress: Progress) -> str:
        if base.ref not in self._registry:
            self._registry[base.ref] = registry_answers(base.ref)
            if not self._registry[base.ref]:
                progress(f"no registry answers for {base.ref}; bootstrapping from Debian's mirror")
        if self._registry[base.ref]:
            return docker_header(base)
        return debootstrap_header(base)

    def sif_for(self, spec: ImageSpec, progress: Progress) -> tuple[Path, str, Path, str]:
        """(base SIF, its definition, target SIF, its definition): each named by its hash."""
        header = self.base_header(spec.base, progress)
        inputs = {s.file: str(self.store / "inputs" / s.file) for s in spec.inputs}
        base_def = render_base_stage(spec, header, inputs)
        base_sif = (
            self.store / f"base-{base_stage_key(spec, header)}-{definition_hash(base_def)}.sif"
        )
        target_def = render_target_stage(spec, str(base_sif))
        target_sif = self.store / f"{spec.name}-{definition_hash(target_def)}.sif"
        return base_sif, base_def, target_sif, target_def

    def build_image(self, spec: ImageSpec, progress: Progress) -> str:
        with self._lock:
            return self._build_image(spec, progress)

    def _build_image(self, spec: ImageSpec, progress: Progress) -> str:
        base_sif, base_def, sif, target_def = self.sif_for(spec, progress)
        if not sif.is_file():
            if not base_sif.is_file():
                for src in spec.inputs:  # a layer's files, where the build can read them
                    if not (self.store / "inputs" / src.file).is_file():
                        copy_atomic(ensure(src), self.store / "inputs" / src.file)
                progress(f"building base {base_sif.name} (about 2 minutes)")
                self._build(base_def, base_sif, progress, f"base of {spec.name}")
            progress(f"building {sif.name}")
            self._build(target_def, sif, progress, spec.name)
        index = self._index()
        if index.get(spec.tag) != str(sif):
            index[spec.tag] = str(sif)
            tmp = self.store / f".index.json.{os.getpid()}.{self.session}"
            tmp.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
            tmp.replace(self.store / "index.json")
        return str(sif)

    def _check_space(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.store).free
        if free < self.min_free:
            raise EngineError(
                f"the SIF cache {self.store} has {free / 2**30:.1f} GiB free; building an image "
                f"needs about {self.min_free / 2**30:.0f} GiB",
                fix="free space there, or point CBUILD_APPTAINER_IMAGES at a folder on a larger "
                "disk",
            )

    def _probe(self) -> None:
        """Who runs Apptainer, and whether --fakeroot finds its /etc/subuid and /etc/subgid
        lines: a scratch build (well under a second) tells both before a long build fails.
        The user is Apptainer's, which need not be ours (a wrapper may run it as another)."""
        with self._lock:
            if not self._probed:
                self._probe_once()

    def _probe_once(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.store, prefix=".probe-") as tmp:
            os.chmod(tmp, 0o755)
            (Path(tmp) / "probe.def").write_text("Bootstrap: scratch\n")
            cmd = [
                *Client._init_command("build", ["--debug"]),
                "--fakeroot",
                "--force",
                f"{tmp}/probe.sif",
                f"{tmp}/probe.def",
            ]
            out = subprocess.run(cmd, capture_output=True, text=True).stderr
        uid = re.search(r"\[U=(\d+),", out)
        self.fakeroot = uid is None or uid.group(1) != "0"
        fix = subuid_fix(out) if self.fakeroot else None
        if fix:
            raise EngineError(
                "no fakeroot mapping for the user who runs Apptainer: " + fix,
                fix=fix.split("; ", 1)[1],
            )
        if self.fakeroot and self.store.is_relative_to("/root"):
            # A --fakeroot build binds the user's home over /root: the store would vanish.
            raise EngineError(
                f"the SIF cache {self.store} is under /root, which Apptainer's --fakeroot "
                "build hides behind the home of the user who runs it",
                fix="point CBUILD_APPTAINER_IMAGES at a folder outside /root "
                "(ci/apptainer-harness.sh env sets one)",
            )
        self._probed = True

    def _build(self, definition: str, sif: Path, progress: Progress, what: str) -> None:
        self._check_space()
        self._probe()
        stem = sif.name.removesuffix(".sif")
        (self.store / "defs").mkdir(exist_ok=True)
        (self.store / "logs").mkdir(exist_ok=True)
        def_path = self.store / "defs" / f"{stem}.def"
        def_path.write_text(definition)
        log = self.store / "logs" / f"{stem}.build.log"
        partial = sif.with_name(f".{sif.name}.partial")
        options = ["--fakeroot"] if self.fakeroot else []
        options += ["--force", "--mksquashfs-args", SQUASH_ARGS]
        cmd = [*Client._init_command("build"), *options, str(partial), str(def_path)]
        # spython's stream_command, stdout and stderr as one stream: Client.build(stream=True)
        # leaves stderr in a pipe it reads only at the end, which a long build fills and stalls.
        code = 0
        with log.open("w", encoding="utf-8", errors="replace") as fh:
            fh.write(f"$ {shlex.join(cmd)}\n")
            try:
                for line in stream_command(cmd, output_type="both"):
                    fh.write(line)
                    if line.startswith(("INFO", "WARNING", "FATAL", "ERROR")):
                        progress(line.rstrip()[:200])
            except subprocess.CalledProcessError as exc:
                code = exc.returncode
            fh.write(f"[exit {code}]\n")
        text = log.read_text(errors="replace")
        if code != 0 or not partial.is_file():
            with contextlib.suppress(OSError):
                partial.unlink()
            tail = "\n".join("    " + ln for ln in text.rstrip().splitlines()[-12:])
            hint = subuid_fix(text)
            if "no space left on device" in text.lower():
                hint = f"the disk is full: free space in {self.store} and in $APPTAINER_TMPDIR"
            raise EngineError(
                f"Apptainer build of {what} failed in {failing_section(text)} (exit {code}):\n"
                f"{tail}\n  definition: {def_path}\n  log: {log}",
                fix=hint or f"fix the definition and run `apptainer build` on {def_path} by hand",
            )
        partial.replace(sif)
        self.image_id(str(sif))  # the digest beside it, while the file is in the page cache

    # --- runs ---------------------------------------------------------------------------------
    def _options(self, spec: RunSpec, scratch: Path) -> list[str]:
        # --no-eval: env values are taken literally, as Docker does (Apptainer would expand $x).
        opts = ["--containall", "--cleanenv", "--no-eval", "--pwd", spec.workdir]
        if self.fakeroot:
            opts.append("--fakeroot")
        (scratch / "overlay").mkdir()
        (scratch / "work").mkdir()
        opts += ["--overlay", str(scratch / "overlay"), "--workdir", str(scratch / "work")]
        for m in spec.mounts:
            opts += ["--bind", f"{m.host.resolve()}:{m.container}" + (":ro" if m.read_only else "")]
        if not spec.network and self.network_isolated:
            opts += ["--net", "--network", self.isolation]
        if spec.env:
            # --env splits its value at commas (LDFLAGS=-Wl,-z,...); an env file does not.
            env_file = scratch / "env"
            env_file.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in spec.env.items()))
            opts += ["--env-file", str(env_file)]
        return opts

    def run(
        self,
        spec: RunSpec,
        log: Path,
        progress: Progress | None = None,
        stream: Progress | None = None,
    ) -> RunResult:
        self._probe()
        run_root = self.store / "run"
        run_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=run_root, prefix=f"{self.session}-"))
        os.chmod(scratch, 0o755)
        try:
            code, out = self._exec(spec, scratch, log, progress, stream)
            refused = code != 0 and not spec.network and self.network_isolated
            if refused and network_refused(out) and self._refuses_network_none(spec, run_root):
                self._lose_isolation(log, progress)  # raises unless --allow-host-network
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir()
                os.chmod(scratch, 0o755)
                code, out = self._exec(spec, scratch, log, progress, stream)
            return RunResult(code, out)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _refuses_network_none(self, spec: RunSpec, run_root: Path) -> bool:
        """Whether Apptainer itself refuses `--network none` here, not the step's command: a
        step may print a network error of its own. `true` in the same image and options."""
        probe = Path(tempfile.mkdtemp(dir=run_root, prefix=f"{self.session}-"))
        os.chmod(probe, 0o755)
        try:
            bare = RunSpec(spec.image, ["true"], workdir="/")
            code, out = self._exec(bare, probe, probe / "log", None)
        finally:
            shutil.rmtree(probe, ignore_errors=True)
        return code != 0 and network_refused(out)

    def _lose_isolation(self, log: Path, progress: Progress | None) -> None:
        """Run later steps with the host's network, only when asked to: the manifest records it."""
        if not self.allow_host_network:
            raise EngineError(
                "this Apptainer installation refuses `--network none`, so cbuild cannot cut "
                "build and test steps off the network",
                fix="ask the administrator to allow it (apptainer.conf), or accept the host's "
                "network with --allow-host-network (or CBUILD_ALLOW_HOST_NETWORK=1): every "
                'manifest then records "network_isolated": false',
            )
        self.network_isolated = False
        msg = (
            "Apptainer refused --network none here: steps run with the host's network "
            "(--allow-host-network)"
        )
        if progress:
            progress(msg)
        with log.open("a") as fh:
            fh.write(f"cbuild: {msg}; the manifest records it\n")

    def interactive_argv(self, spec: RunSpec, *, tty: bool) -> list[str]:
        """`apptainer exec` with a run's isolation (no throw-away overlay: the SIF stays
        read-only, the venv lives in the bound folders and /tmp)."""
        opts = ["--containall", "--cleanenv", "--no-eval", "--pwd", spec.workdir]
        if self.fakeroot:
            opts.append("--fakeroot")
        for m in spec.mounts:
            opts += ["--bind", f"{m.host}:{m.container}" + (":ro" if m.read_only else "")]
        if not spec.network and self.network_isolated:
            opts += ["--net", "--network", self.isolation]
        # APPTAINERENV_*, not --env, which splits its value at commas (LDFLAGS=-Wl,-z,...).
        env = [f"APPTAINERENV_{k}={v}" for k, v in spec.env.items()]
        return [
            *(["env", *env] if env else []),
            "apptainer",
            "exec",
            *opts,
            spec.image,
            *spec.command,
        ]

    def stop_all(self) -> int:
        """End every Apptainer process of this engine's runs (on Ctrl-C): they are the ones whose
        command line names one of its scratch folders. A wrapper's processes (the test harness's
        `podman exec` and the Apptainer inside it) show up here too, the host seeing them all."""
        mark = f"{self.store / 'run' / self.session}-".encode()
        ended = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if mark in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)
                    ended += 1
            except (OSError, ProcessLookupError):
                continue
        return ended

    def _exec(
        self,
        spec: RunSpec,
        scratch: Path,
        log: Path,
        progress: Progress | None,
        stream: Progress | None = None,
    ) -> tuple[int, str]:
        options = self._options(spec, scratch)
        buf: list[str] = []
        code = 0
        with log.open("a", encoding="utf-8", errors="replace") as fh:
            fh.write(f"$ {' '.join(spec.command)}\n")
            try:
                lines = Client.execute(
                    spec.image,
                    spec.command,
                    options=options,
                    singularity_options=["--quiet"],
                    stream=True,
                    stream_type="both",
                    quiet=True,
                )
                for line in lines:
                    fh.write(line)
                    buf.append(line)
                    if stream:
                        stream(line)
                    if progress and line.strip():
                        progress(line.rstrip()[:200])
            except subprocess.CalledProcessError as exc:
                code = exc.returncode
            fh.write(f"[exit {code}]\n")
        return code, "".join(buf)
