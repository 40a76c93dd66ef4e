"""A signed, hash-chained deletion ledger: `ledger.jsonl`, one JSON object per line.

Each entry records one operation that forgot or edited something: request id, time, kind, keyed
fingerprints of the forgotten rows (fingerprint.py; never the text, never a plain hash), counts,
method and hyperparameters, the model fingerprint before and after, and the evaluation summary.

    hash      = sha256(canonical(entry without "hash" and "signature"))
    prev_hash = hash of the previous entry (GENESIS = 64 zeros for the first one)
    signature = Ed25519(operator key, "llm_forget.ledger/2\\0" || hash)   (base64; `signer` = public key)

canonical(x) = json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False), UTF-8.
Editing a byte breaks the entry's hash; re-hashing the chain after an edit breaks every signature
from there on (only the key's holder can sign again); deleting or reordering breaks prev_hash;
changing the model breaks the last `model_after`; each `model_before` must equal the previous
`model_after` (an entry without one fails, from version 2 on). `verify --trust KEY` also rules
out a forger who re-signs everything with a key of their own: every entry must then be signed by
a trusted key. `ledger.pub` beside the ledger lists the public keys that signed it.

Version 1 entries (before signing existed) have no signature, plain sha256 row hashes
(`forgotten.row_sha256`) and a weights-only model hash; they still verify, reported as unsigned.

A run whose input model has a ledger copies it verbatim and appends to it (after verifying it,
under a file lock), so every run folder carries its model's whole history and verifies alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import UserError
from . import fingerprint as fpr
from . import keys

logger = logging.getLogger(__name__)

LEDGER = "ledger.jsonl"
PUBKEYS = "ledger.pub"
LOCK = ".ledger.lock"
GENESIS = "0" * 64
VERSION = 2
SIGN_TAG = b"llm_forget.ledger/2\0"
SCHEME = "hmac-sha256/row-key"


def canonical(obj) -> bytes:
    """The one byte string an entry is hashed from: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: dict) -> str:
    """sha256 of the canonical form of `entry` without its "hash" and "signature" fields."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k not in ("hash", "signature")})).hexdigest()


def set_digest(hashes: list[str]) -> str:
    """sha256 over the sorted row fingerprints (one per line): names a whole forget set in one value."""
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


def ledger_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / LEDGER
    if not p.exists():
        raise UserError(f"no ledger at {path}")
    return p


def parse(text: str, where: str = "ledger") -> list[dict]:
    entries = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: entry {i} is not valid JSON ({err.msg})") from err
        if not isinstance(e, dict):
            raise UserError(f"{where}: entry {i} is not a JSON object")
        entries.append(e)
    return entries


def read(path: str | Path) -> list[dict]:
    """Entries of a ledger file (or of the ledger.jsonl in a folder). Bad JSON raises UserError."""
    p = ledger_path(path)
    return parse(p.read_text(encoding="utf-8"), str(p))


def find_parent(model_path: str | Path | None) -> Path | None:
    """The ledger an input model already carries: MODEL/ledger.jsonl, or RUN/ledger.jsonl when the
    model is RUN/model. None for a model without history (a zoo model, a Hub id)."""
    if not model_path or not Path(model_path).is_dir():
        return None
    p = Path(model_path)
    if (p / LEDGER).is_file():
        return p / LEDGER
    if p.name == "model" and (p.parent / LEDGER).is_file():
        return p.parent / LEDGER
    return None


def check_parent(model_path: str | Path | None) -> Path | None:
    """The input model's ledger (`find_parent`), verified before a run starts: UserError when it does not
    verify, rather than after the training that `append` would then refuse to record."""
    parent = find_parent(model_path)
    if parent is not None:
        problems, _ = verify_chain(read(parent))
        if problems:
            raise UserError(f"{parent} does not verify ({problems[0]}); refusing to extend it")
    return parent


def new_entry(*, kind: str, operation: str, forgotten_hashes: list[str], method: str, hyperparameters: dict,
              model_before: str | None, model_after: str, evaluation: dict | None = None, counts: dict | None = None,
              request_id: str | None = None, extra: dict | None = None, description_hash: str | None = None) -> dict:
    """An unchained entry. `forgotten_hashes` (row_hash values) and, for a request by description,
    `description_hash` (sha256 of the description) are turned into keyed fingerprints by append():
    a name is as guessable as a short row. model_before / model_after are
    fingerprint.model_fingerprint values."""
    return {
        "version": VERSION,
        "request_id": request_id or f"req-{uuid.uuid4().hex[:12]}",
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "operation": operation,
        "kind": kind,
        "forgotten": {"count": len(forgotten_hashes), "_rows": list(forgotten_hashes),
                      **({"_description": description_hash} if description_hash else {})},
        "counts": _finite(counts or {}),
        "method": method,
        "hyperparameters": _finite(hyperparameters or {}),
        "model_before": model_before,
        "model_after": model_after,
        "evaluation": numeric_summary(evaluation),
        **(_finite(extra) if extra else {}),
    }


def fingerprint_key(entries: list[dict]) -> tuple[str, bytes]:
    """(key id, secret) for new fingerprints: the ledger's latest key that this operator holds, else
    a new one (a ledger continued by another operator gets that operator's own key)."""
    for e in reversed(entries):
        kid = (e.get("forgotten") or {}).get("key_id")
        if kid:
            kid, secret = keys.fingerprint_secret(kid)
            if secret is not None:
                return kid, secret
    return keys.fingerprint_secret()


def keyed(forgotten: dict, kid: str, secret: bytes) -> dict:
    """A forgotten block with row hashes replaced by keyed fingerprints (count, scheme, key id, set digest)."""
    rows = forgotten.get("_rows", forgotten.get("row_sha256", []))
    fps = [fpr.row_fingerprint(secret, h) for h in rows]
    out = {"count": len(fps), "scheme": SCHEME, "key_id": kid, "set_digest": set_digest(fps),
           "row_fingerprints": fps}
    if forgotten.get("_description"):
        out["description_fingerprint"] = fpr.row_fingerprint(secret, forgotten["_description"])
    return out


def chain(entries: list[dict], entry: dict, signing_key=None) -> dict:
    """`entry` linked after `entries`: index, prev_hash, signer, its own hash and signature."""
    e = {k: v for k, v in entry.items() if k not in ("hash", "prev_hash", "index", "signature", "signer")}
    e["index"] = len(entries)
    e["prev_hash"] = entries[-1].get("hash", entry_hash(entries[-1])) if entries else GENESIS
    if signing_key is not None:
        e["signer"] = keys.public_b64(signing_key)
    e["hash"] = entry_hash(e)
    if signing_key is not None:
        e["signature"] = keys.sign(signing_key, SIGN_TAG + e["hash"].encode())
    return e


@contextlib.contextmanager
def locked(folder: Path):
    """An exclusive lock on FOLDER/.ledger.lock for a read-verify-append."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def append(run_dir: str | Path, entry: dict, parent: str | Path | None = None, fresh: bool = False,
           signing_key=None) -> dict:
    """Append `entry` to RUN_DIR/ledger.jsonl, signed with `signing_key` (a key, a key file path, or
    None for keys.load_signing_key's default). When the run folder has no ledger yet (or `fresh`:
    its model was just rebuilt from the input model) and `parent` is given, the new ledger starts
    as a verbatim copy of the parent. The ledger extended must verify (chain and signatures), or
    UserError. Returns the chained entry; ledger.jsonl is replaced atomically, under a lock."""
    from .. import io

    run_dir = Path(run_dir)
    own = run_dir / LEDGER
    key = signing_key if hasattr(signing_key, "sign") else keys.load_signing_key(signing_key)
    with locked(run_dir):
        if own.exists() and fresh:
            logger.warning("%s already had a ledger for a model that this run replaced; starting again from the "
                           "input model's history", run_dir)
        src = own if own.exists() and not fresh else (Path(parent) if parent and Path(parent).is_file() else None)
        text = src.read_text(encoding="utf-8") if src else ""
        if text and not text.endswith("\n"):
            text += "\n"
        entries = parse(text, str(src))
        problems, _ = verify_chain(entries)
        if problems:
            raise UserError(f"{src} does not verify ({problems[0]}); refusing to extend it")
        if any("row_sha256" in (e.get("forgotten") or {}) for e in entries):
            logger.warning("%s names rows by unkeyed sha256, which anyone can confirm by guessing; "
                           "`llm-forget ledger migrate` replaces them with keyed fingerprints", src)
        e = dict(entry)
        if "_rows" in (e.get("forgotten") or {}):
            e["forgotten"] = keyed(e["forgotten"], *fingerprint_key(entries))
        e = chain(entries, e, key)
        io.write_text(own, text + canonical(e).decode("utf-8") + "\n")
        write_pubkeys(run_dir, entries + [e])
    return e


def write_pubkeys(folder: Path, entries: list[dict]) -> None:
    """FOLDER/ledger.pub: one line per public key that signed the ledger, `KEY key_id`."""
    from .. import io

    signers = list(dict.fromkeys(e["signer"] for e in entries if e.get("signer")))
    if signers:
        io.write_text(folder / PUBKEYS, "".join(f"{s} {keys.key_id(s)}\n" for s in signers))


def head(path: str | Path) -> str | None:
    """Hash of the last entry (the ledger head), or None when there is no ledger."""
    try:
        entries = read(path)
    except UserError:
        return None
    return entries[-1].get("hash") if entries else None


def signers(entries: list[dict]) -> dict[str, str]:
    """key_id -> public key of every key that signed an entry."""
    return {keys.key_id(e["signer"]): e["signer"] for e in entries if e.get("signer")}


@dataclass
class Verification:
    ok: bool
    entries: int
    problems: list[str] = field(default_factory=list)
    head: str | None = None
    model_hash: str | None = None
    notes: list[str] = field(default_factory=list)
    signers: dict = field(default_factory=dict)
    unsigned: int = 0


def _lineage(i: int, prev: dict, e: dict) -> tuple[str | None, str | None]:
    """(problem, note) of entry i's model_before against the previous entry's model_after."""
    before = e.get("model_before")
    if before is None:
        if e.get("version", 1) >= 2:
            return f"entry {i}: model_before is missing, so its lineage cannot be checked", None
        return None, f"entry {i}: no model_before (version-1 entry; lineage not checked)"
    after = prev.get("model_after")
    if prev.get("version", 1) < 2 <= e.get("version", 1):
        before = e.get("model_before_v1")  # weights-only hash, comparable with a version-1 model_after
    if after and before != after:
        return f"entry {i}: model_before does not match entry {i - 1}'s model_after", None
    return None, None


def verify_chain(entries: list[dict], trust: set[str] | None = None) -> tuple[list[str], list[str]]:
    """(problems, notes) of the chain itself: indices, links, hashes, signatures, lineage. With
    `trust` (base64 public keys), every entry must be signed by one of them."""
    problems, notes = [], []
    prev, signed_seen = GENESIS, False
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
        if e.get("signature") or e.get("signer"):
            signed_seen = True
            message = SIGN_TAG + str(e.get("hash")).encode()
            if not keys.check(str(e.get("signer", "")), str(e.get("signature", "")), message):
                problems.append(f"entry {i}: signature does not verify (the entry was changed or re-hashed "
                                "by someone without the signing key)")
            elif trust is not None and e["signer"] not in trust:
                problems.append(f"entry {i}: signed by key {keys.key_id(e['signer'])}, which is not trusted")
        elif trust is not None:
            problems.append(f"entry {i}: unsigned, but trusted signatures were required")
        elif signed_seen:
            problems.append(f"entry {i}: unsigned although earlier entries are signed (signatures stripped?)")
        if i:
            problem, note = _lineage(i, entries[i - 1], e)
            problems += [problem] if problem else []
            notes += [note] if note else []
        elif e.get("model_before") is None:
            notes.append("entry 0: the input model was not a local folder (a Hub id?), so its fingerprint "
                         "before the first operation is not recorded")
        prev = e.get("hash", h)
    return problems, notes


def model_dir_of(path: Path) -> Path | None:
    """Where the weights of a ledgered folder are: RUN/model/ or the folder itself."""
    for d in (path / "model", path):
        if d.is_dir() and (any(d.glob("*.safetensors")) or any(d.glob("*.bin"))):
            return d
    return None


def verify(path: str | Path, model_dir: str | Path | None = None, trust: list[str] | None = None,
           anchor: str | None = None) -> Verification:
    """Check PATH's ledger (a run folder, a model folder, or a ledger.jsonl): hash chain, signatures
    (against `trust`, base64 public keys, when given), lineage, that an `anchor` hash (a head
    published earlier, e.g. in the Hub card) is still in the chain, and that the last entry's
    `model_after` is the fingerprint of the model on disk."""
    p = ledger_path(path)
    try:
        entries = read(p)
    except UserError as e:
        return Verification(False, 0, [str(e)])
    if not entries:
        return Verification(False, 0, ["the ledger is empty"])
    problems, notes = verify_chain(entries, set(trust) if trust is not None else None)
    if anchor and anchor not in {e.get("hash") for e in entries}:
        problems.append(f"the anchor {anchor} is not the hash of any entry (history before it was rewritten)")
    md = Path(model_dir) if model_dir else model_dir_of(p.parent)
    mh, last = None, len(entries) - 1
    if md is None:
        problems.append(f"entry {last}: no model weights found next to the ledger to compare with")
    else:
        mh = fpr.model_fingerprint_for(md, entries[-1].get("version", 1))
        if entries[-1].get("model_after") != mh:
            problems.append(f"entry {last}: model_after does not match the model in {md} "
                            "(the model changed after this entry)")
    unsigned = sum(not e.get("signature") for e in entries)
    return Verification(not problems, len(entries), problems, entries[-1].get("hash"), mh, notes,
                        signers(entries), unsigned)
