"""Writing files so that a reader never sees half of one: a temporary name in the same folder,
then one rename (atomic within a file system, so on NFS too)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def temp_beside(path: Path) -> Path:
    """A dot-named temporary beside `path`, unique per process: scans skip dot files."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write `data` to `path` in one step; the folder is made when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def copy_atomic(src: Path, dest: Path) -> Path:
    """Copy `src` to `dest` in one step (a reader sees the old file or the whole new one)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(dest)
    try:
        shutil.copyfile(src, tmp)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
