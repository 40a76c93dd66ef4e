"""A tamper-evident deletion ledger: `ledger.jsonl`, one JSON object per line, hash-chained.

Each entry records one operation that forgot or edited something: request id, time, kind,
sha256 content hashes of the forgotten rows (`llm_forget.data.readers.row_hash`; never the
text), counts, method and hyperparameters, the model hash before and after
(`llm_forget.models.model_hash`), and the evaluation summary. Two fields make the chain:

    hash      = sha256(canonical(entry without "hash"))
    prev_hash = hash of the previous entry (GENESIS = 64 zeros for the first one)

canonical(x) = json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False), UTF-8.
Editing any byte of an entry breaks its own hash; deleting or reordering an entry breaks the
next entry's prev_hash; changing the weights breaks the last entry's `model_after`; and each
entry's `model_before` must equal the previous entry's `model_after`.

A run whose input model has a ledger (beside the weights, or in the run folder that holds the
model as `model/`) copies that ledger verbatim and appends to it, so every run folder carries
its model's whole history and verifies on its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import UserError

logger = logging.getLogger(__name__)

LEDGER = "ledger.jsonl"
GENESIS = "0" * 64
VERSION = 1


def canonical(obj) -> bytes:
    """The one byte string an entry is hashed from: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: dict) -> str:
    """sha256 of the canonical form of `entry` without its own "hash" field."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def set_digest(hashes: list[str]) -> str:
    """sha256 over the sorted row hashes (one per line): names a whole forget set in one value."""
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()


def _finite(x):
    """Numbers only, NaN/inf as None: JSON without NaN tokens, so every reader agrees on the bytes."""
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def numeric_summary(summary: dict | None) -> dict:
    """The evaluation summary reduced to its numbers (a ledger never holds text from the data)."""
    return {k: _finite(v) for k, v in (summary or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def read(path: str | Path) -> list[dict]:
    """Entries of a ledger file (or of the ledger.jsonl in a folder). Bad JSON raises UserError
    naming the line."""
    p = ledger_path(path)
    entries = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{p}: entry {i} is not valid JSON ({err.msg})") from err
        if not isinstance(e, dict):
            raise UserError(f"{p}: entry {i} is not a JSON object")
        entries.append(e)
    return entries


def ledger_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / LEDGER
    if not p.exists():
        raise UserError(f"no ledger at {path}")
    return p


def find_parent(model_path: str | Path | None) -> Path | None:
    """The ledger an input model already carries: MODEL/ledger.jsonl, or RUN/ledger.jsonl when the
    model is RUN/model. None for a model without history (a zoo model, a Hub id)."""
    if not model_path:
        return None
    p = Path(model_path)
    if not p.is_dir():
        return None
    if (p / LEDGER).is_file():
        return p / LEDGER
    if p.name == "model" and (p.parent / LEDGER).is_file():
        return p.parent / LEDGER
    return None


def new_entry(*, kind: str, operation: str, forgotten_hashes: list[str], method: str, hyperparameters: dict,
              model_before: str | None, model_after: str, evaluation: dict | None = None, counts: dict | None = None,
              request_id: str | None = None, extra: dict | None = None) -> dict:
    """An unchained entry (append() adds index, prev_hash and hash)."""
    return {
        "version": VERSION,
        "request_id": request_id or f"req-{uuid.uuid4().hex[:12]}",
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "operation": operation,
        "kind": kind,
        "forgotten": {"count": len(forgotten_hashes), "set_sha256": set_digest(forgotten_hashes),
                      "row_sha256": list(forgotten_hashes)},
        "counts": _finite(counts or {}),
        "method": method,
        "hyperparameters": _finite(hyperparameters or {}),
        "model_before": model_before,
        "model_after": model_after,
        "evaluation": numeric_summary(evaluation),
        **(_finite(extra) if extra else {}),
    }


def chain(entries: list[dict], entry: dict) -> dict:
    """`entry` linked after `entries`: index, prev_hash and its own hash set."""
    e = {k: v for k, v in entry.items() if k not in ("hash", "prev_hash", "index")}
    e["index"] = len(entries)
    e["prev_hash"] = entries[-1].get("hash", entry_hash(entries[-1])) if entries else GENESIS
    e["hash"] = entry_hash(e)
    return e


def append(run_dir: str | Path, entry: dict, parent: str | Path | None = None, fresh: bool = False) -> dict:
    """Append `entry` to RUN_DIR/ledger.jsonl. When the run folder has no ledger yet (or `fresh`:
    the folder's model was just rebuilt from the input model, e.g. a resumed run) and `parent`
    (an input model's ledger) is given, the new ledger starts as a verbatim copy of it.
    Returns the chained entry. The file is replaced atomically."""
    from .. import io

    run_dir = Path(run_dir)
    own = run_dir / LEDGER
    if own.exists() and fresh:
        logger.warning("%s already had a ledger for a model that this run replaced; starting again from the "
                       "input model's history", run_dir)
    if own.exists() and not fresh:
        text = own.read_text(encoding="utf-8")
    elif parent is not None and Path(parent).is_file():
        text = Path(parent).read_text(encoding="utf-8")
        bad = verify_chain(read(parent))
        if bad:
            logger.warning("the input model's ledger does not verify (%s); continuing it as it is, so the new "
                           "ledger will not verify either", bad[0])
    else:
        text = ""
    if text and not text.endswith("\n"):
        text += "\n"
    entries = [json.loads(line) for line in text.splitlines() if line.strip()] if text else []
    e = chain(entries, entry)
    io.write_text(own, text + canonical(e).decode("utf-8") + "\n")
    return e


def head(path: str | Path) -> str | None:
    """Hash of the last entry (the ledger head), or None when there is no ledger."""
    try:
        entries = read(path)
    except UserError:
        return None
    return entries[-1].get("hash") if entries else None


@dataclass
class Verification:
    ok: bool
    entries: int
    problems: list[str] = field(default_factory=list)
    head: str | None = None
    model_hash: str | None = None


def verify_chain(entries: list[dict]) -> list[str]:
    """Problems of the hash chain itself, each naming the entry number (0-based)."""
    problems = []
    prev = GENESIS
    for i, e in enumerate(entries):
        if e.get("index") != i:
            problems.append(f"entry {i}: index is {e.get('index')!r}, expected {i} (an entry was deleted, "
                            "inserted or reordered)")
        if e.get("prev_hash") != prev:
            problems.append(f"entry {i}: prev_hash does not match the hash of entry {i - 1}"
                            if i else "entry 0: prev_hash is not the genesis hash")
        h = entry_hash(e)
        if e.get("hash") != h:
            problems.append(f"entry {i}: content does not match its hash (the entry was edited)")
        if i and entries[i - 1].get("model_after") and e.get("model_before") not in (None, entries[i - 1]["model_after"]):
            problems.append(f"entry {i}: model_before does not match entry {i - 1}'s model_after")
        prev = e.get("hash", h)
    return problems


def model_dir_of(path: Path) -> Path | None:
    """Where the weights of a ledgered folder are: RUN/model/ or the folder itself."""
    for d in (path / "model", path):
        if d.is_dir() and (any(d.glob("*.safetensors")) or any(d.glob("*.bin"))):
            return d
    return None


def verify(path: str | Path, model_dir: str | Path | None = None) -> Verification:
    """Check the chain of PATH's ledger (a run folder, a model folder, or a ledger.jsonl) and that
    its last entry's `model_after` is the hash of the weights on disk."""
    from ..models import model_hash

    p = ledger_path(path)
    folder = p.parent
    try:
        entries = read(p)
    except UserError as e:
        return Verification(False, 0, [str(e)])
    if not entries:
        return Verification(False, 0, ["the ledger is empty"])
    problems = verify_chain(entries)
    md = Path(model_dir) if model_dir else model_dir_of(folder)
    mh = None
    last = len(entries) - 1
    if md is None:
        problems.append(f"entry {last}: no model weights found next to the ledger to compare with")
    else:
        mh = model_hash(md)
        if entries[-1].get("model_after") != mh:
            problems.append(f"entry {last}: model_after does not match the weights in {md} "
                            "(the model changed after this entry)")
    return Verification(not problems, len(entries), problems, entries[-1].get("hash"), mh)
