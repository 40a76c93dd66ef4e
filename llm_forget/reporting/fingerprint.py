"""Fingerprints the ledger records: of a model folder, and (privately) of forgotten rows.

Model fingerprint (ledger entries of version >= 2): sha256 over every file of the folder that can
change the model's behaviour, i.e. all of them (weights, config.json, generation_config.json,
tokenizer files, adapter_config.json, sisa.json, ...) except the evidence written about the model
(EVIDENCE: ledger, public keys, card, results, recipe) and hidden files:

    H = sha256("llm_forget.model/2\\0" || for each file, sorted by relative path:
                 path || "\\0" || size (decimal) || "\\0" || bytes)

Version-1 entries used `llm_forget.models.model_hash` (top-level weight files only).

Row fingerprints (ledger version >= 2): with K the ledger's 32-byte secret (keys.fingerprint_secret)
and h = row_hash(row) (sha256 of the row's content),

    k_row = HMAC-SHA256(K, "llm_forget.row-key/1" || h)      (the row's proof key)
    fp    = HMAC-SHA256(k_row, h)                            (published in the ledger)

Without K nobody can compute k_row, so a published fp cannot be tested against a guessed row.
To prove that one row was forgotten the operator hands out k_row: whoever holds the row computes
h and HMAC(k_row, h) and finds it in the signed entry; k_row says nothing about any other row.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from ..errors import UserError

EVIDENCE = {"ledger.jsonl", "ledger.pub", "README.md", "results.json", "recipe.yaml", "report.md"}
ROW_KEY_TAG = b"llm_forget.row-key/1"


def model_files(path: str | Path) -> list[Path]:
    """Every file under PATH that the model fingerprint covers, sorted by relative path."""
    p = Path(path)
    out = []
    for f in sorted(p.rglob("*"), key=lambda x: x.relative_to(p).as_posix()):
        rel = f.relative_to(p)
        if f.is_file() and not any(part.startswith(".") for part in rel.parts) and rel.as_posix() not in EVIDENCE:
            out.append(f)
    return out


def model_fingerprint(path: str | Path) -> str:
    """sha256 of a model folder: weights, config, tokenizer, adapter and SISA files (see module doc)."""
    p = Path(path)
    files = model_files(p)
    if not any(f.suffix in (".safetensors", ".bin", ".gguf", ".pt") for f in files):
        raise UserError(f"no weight files in {p}")
    h = hashlib.sha256(b"llm_forget.model/2\0")
    for f in files:
        h.update(f"{f.relative_to(p).as_posix()}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def model_fingerprint_for(path: str | Path, version: int) -> str:
    """The fingerprint a ledger entry of `version` records for a model folder."""
    if version >= 2:
        return model_fingerprint(path)
    from ..models import model_hash

    return model_hash(path)


def row_key(secret: bytes, row_hash: str) -> str:
    """k_row = HMAC-SHA256(K, tag || h), hex: the proof key of one row."""
    return hmac.new(secret, ROW_KEY_TAG + row_hash.encode(), hashlib.sha256).hexdigest()


def from_key(key_hex: str, row_hash: str) -> str:
    """fp = HMAC-SHA256(k_row, h), hex."""
    return hmac.new(bytes.fromhex(key_hex), row_hash.encode(), hashlib.sha256).hexdigest()


def row_fingerprint(secret: bytes, row_hash: str) -> str:
    """The published fingerprint of a row (module doc)."""
    return from_key(row_key(secret, row_hash), row_hash)
