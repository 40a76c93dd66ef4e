"""Atomic writes: a crash never leaves a half-written file or folder that looks complete."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | Path):
    """Yield a temporary path in `path`'s folder (same suffix, so writers that go by the suffix,
    like matplotlib, still work); on success it replaces `path` in one rename, on failure it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def strict(obj):
    """`obj` with every NaN or infinite float replaced by None (JSON null), recursively, so that
    strict JSON readers accept it (JSON has no NaN); tuples become lists, other values stay."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return strict(obj.item())
    return obj


def dumps(obj, **kw) -> str:
    """Strict JSON text of `obj`: NaN and infinities become null (`strict`), never `NaN`."""
    return json.dumps(strict(obj), allow_nan=False, default=str, **kw)


def write_json(path: str | Path, obj) -> Path:
    """Write `obj` as strict JSON (NaN and infinities as null), atomically."""
    return write_text(path, dumps(obj, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder next to `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
