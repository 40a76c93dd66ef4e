"""Per-row deletion proofs, and migration of ledgers that name rows by plain sha256.

prove(LEDGER, row): the operator (who holds the ledger's fingerprint secret) gives whoever asks
about one row {entry, entry hash, key id, row key}; check(LEDGER, row, proof) recomputes the
row's fingerprint from the row and the row key and finds it in that (signed) entry. The row key
opens that one row only (fingerprint.py).

migrate(LEDGER): rewrites a version-1 ledger (plain sha256 row hashes, unsigned) so that its rows
are named by keyed fingerprints and every entry is signed; each entry keeps its content otherwise
and records the hash it had before (`migrated_from`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from . import fingerprint as fpr
from . import keys
from . import ledger as L


def _row_hash(row: dict) -> str:
    from ..data.readers import row_hash

    if not any(k in row for k in ("question", "answer", "text")):
        raise UserError("the row has none of the fields question, answer, text")
    return row_hash(row)


def prove(path: str | Path, row: dict) -> dict:
    """The proof that `row` was forgotten in PATH's ledger. UserError when it was not, or when this
    operator does not hold the ledger's fingerprint secret."""
    entries = L.read(path)
    h = _row_hash(row)
    for e in entries:
        f = e.get("forgotten") or {}
        if not f.get("key_id"):
            continue
        kid, secret = keys.fingerprint_secret(f["key_id"])
        if secret is None:
            continue
        k = fpr.row_key(secret, h)
        if fpr.from_key(k, h) in f.get("row_fingerprints", []):
            return {"entry": e["index"], "entry_hash": e["hash"], "request_id": e.get("request_id"),
                    "key_id": kid, "row_key": k}
    raise UserError("this row is not recorded as forgotten in the ledger under any fingerprint key held here")


def check(path: str | Path, row: dict, proof: dict) -> str:
    """Check a proof; returns a one-line statement, raises UserError naming what does not hold."""
    entries = L.read(path)
    problems, _ = L.verify_chain(entries)
    if problems:
        raise UserError(f"the ledger does not verify: {problems[0]}")
    try:
        e = entries[int(proof["entry"])]
        fp = fpr.from_key(str(proof["row_key"]), _row_hash(row))
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise UserError(f"malformed proof ({type(err).__name__}: {err})") from err
    if e.get("hash") != proof.get("entry_hash"):
        raise UserError(f"entry {proof['entry']} of this ledger is not the entry the proof names")
    if fp not in (e.get("forgotten") or {}).get("row_fingerprints", []):
        raise UserError(f"the row's fingerprint under this row key is not in entry {proof['entry']}")
    who = f"signed by key {keys.key_id(e['signer'])}" if e.get("signer") else "unsigned"
    return f"the row was forgotten in entry {e['index']} ({e.get('request_id')}, {e.get('time')}; {who})"


def migrate(path: str | Path, signing_key=None) -> dict:
    """Rewrite PATH's ledger with keyed fingerprints and signatures (module doc). Returns
    {"entries", "rows", "old_head", "new_head"}. The old ledger must verify first."""
    from .. import io

    p = L.ledger_path(path)
    with L.locked(p.parent):
        entries = L.read(p)
        problems, _ = L.verify_chain(entries)
        if problems:
            raise UserError(f"{p} does not verify ({problems[0]}); migrate only an intact ledger")
        if not any("row_sha256" in (e.get("forgotten") or {}) or not e.get("signature") for e in entries):
            raise UserError(f"{p} is already keyed and signed")
        key = keys.load_signing_key(signing_key)
        if key is None:
            raise UserError("migration signs every entry; choose a signing key other than none")
        kid, secret = L.fingerprint_key(entries)
        out, rows = [], 0
        for e in entries:
            e = dict(e)
            if "row_sha256" in (e.get("forgotten") or {}):
                rows += len(e["forgotten"]["row_sha256"])
                e["forgotten"] = L.keyed(e["forgotten"], kid, secret)
            e["migrated_from"] = e.get("hash")
            out.append(L.chain(out, e, key))
        io.write_text(p, "".join(L.canonical(e).decode("utf-8") + "\n" for e in out))
        L.write_pubkeys(p.parent, out)
    return {"entries": len(out), "rows": rows, "old_head": entries[-1].get("hash"), "new_head": out[-1]["hash"]}
