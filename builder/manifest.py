"""The manifest beside each placed wheel (`<wheel>.json`): what was built, from what, how, in
which image and how it was tested. The pipeline writes it; `run`, `rebuild`, `verify` and
`inspect` read it. Manifests without `schema_version` are version 1 (cbuild before it)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from builder.errors import CbuildError
from builder.targets.model import Target, load_stack

SCHEMA_VERSION = 1


class ManifestError(CbuildError):
    """A wheel's manifest is missing, unreadable or lacks what a command needs."""

    exit_code = 2


def manifest_path(wheel: Path) -> Path:
    """Where a wheel's manifest lies: beside it, named `<wheel>.json`."""
    return wheel.with_name(wheel.name + ".json")


@dataclass(frozen=True)
class TestRecord:
    __test__ = False  # not a pytest test class

    status: str  # a pipeline status: tested | not-tested | ...
    how: str = ""  # how the CPU level was tested (natively, under QEMU) or why not
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "how": self.how, "detail": self.detail}


@dataclass(frozen=True)
class Manifest:
    """One manifest. A field is None when it is not recorded (an older cbuild wrote it, or a
    person did); the commands that need a field say so (`missing`). `target`, `lock`, `build`
    and `recipe` stay JSON-shaped: their readers check them where they use them."""

    package: str | None = None
    version: str | None = None
    target: dict[str, Any] | None = None  # Target.as_dict()
    wheel: str | None = None  # the wheel's file name
    sha256: str | None = None
    engine: str | None = None  # engine and version
    # False where the engine could not switch the network off (Apptainer refusing --network).
    network_isolated: bool | None = None
    image: str | None = None  # the image's tag, its id, and its definition's hash
    image_id: str | None = None
    image_spec_hash: str | None = None
    provider: str | None = None
    test: TestRecord | None = None
    source_date_epoch: int | None = None
    lock: list[dict[str, Any]] | None = None  # pypi.LockEntry fields, one dict per input
    # The build as it ran: key, built_on, steps_version, env, effective_cflags, the probed
    # facts (python, glibc, gcc, ..., first_compile_command), python_cflags.
    build: dict[str, Any] | None = None
    python: str | None = None
    # What the build's image had installed, as "name=version": "deb" (dpkg-query -W) and
    # "python" (the image interpreter's distributions); `verify` names drift package by package.
    image_packages: dict[str, list[str]] | None = None
    recipe: dict[str, Any] | None = None  # resolved, file (the TOML as written), patches
    edits: list[Any] | None = None  # each `cbuild wheel-edit` since, appended by it
    schema_version: int = SCHEMA_VERSION
    # Keys this cbuild does not know (kept, so that a rewrite loses nothing).
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    # --- reading ----------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "the manifest") -> Manifest:
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ManifestError(f"{where} has an invalid schema_version {version!r}")
        if version > SCHEMA_VERSION:
            raise ManifestError(
                f"{where} is of schema version {version}, newer than this cbuild reads "
                f"(up to {SCHEMA_VERSION})",
                fix="use the cbuild that wrote it, or a newer one",
            )
        known = {f.name for f in fields(cls)} - {"extra", "schema_version"}
        values = {k: v for k, v in data.items() if k in known}
        test = values.get("test")
        if isinstance(test, dict):
            values["test"] = TestRecord(
                str(test.get("status", "")), str(test.get("how", "")), str(test.get("detail", ""))
            )
        elif test is not None:
            raise ManifestError(f"{where}: test is not an object: {test!r}")
        extra = {k: v for k, v in data.items() if k not in known and k != "schema_version"}
        return cls(**values, schema_version=version, extra=extra)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """A manifest file; ManifestError when it is unreadable, not a JSON object, or of a
        newer schema than this cbuild reads."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ManifestError(f"manifest {path} is unreadable: {exc}") from exc
        if not isinstance(data, dict):
            raise ManifestError(f"manifest {path} is not a JSON object")
        return cls.from_dict(data, f"manifest {path}")

    @classmethod
    def beside(cls, wheel: Path) -> Manifest | None:
        """The manifest of `wheel`, or None when it has none."""
        path = manifest_path(wheel)
        return cls.load(path) if path.is_file() else None

    def missing(self, needed: tuple[str, ...]) -> list[str]:
        """Which of the `needed` fields this manifest does not record."""
        return [k for k in needed if getattr(self, k, None) is None]

    @property
    def target_id(self) -> str | None:
        return self.target.get("id") if isinstance(self.target, dict) else None

    def built_target(self) -> Target:
        """The recorded target, field by field (its Python too, not the provider's default)."""
        t = self.target
        try:
            target = Target(
                load_stack(t["stack"]),
                t["level"],
                t.get("accelerator", "cpu"),
                t.get("python", "3.11"),
                t.get("provider", "standalone"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"the manifest's target is incomplete: {t!r} ({exc})") from exc
        if target.id != t.get("id", target.id):
            raise ManifestError(f"the manifest's target id {t['id']} does not match its fields")
        return target

    # --- writing ----------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, in the order cbuild has always written; fields not recorded left out."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("schema_version", "extra") or value is None:
                continue
            out[f.name] = value.as_dict() if isinstance(value, TestRecord) else value
        return {**out, **self.extra}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2) + "\n"
