"""The operator's keys: an Ed25519 signing key for ledger entries and per-ledger fingerprint secrets.

Both live outside run folders, in the operator's configuration folder (as SSH and Git signing
keys do): `$LLM_FORGET_CONFIG`, else `$XDG_CONFIG_HOME/llm_forget`, else `~/.config/llm_forget`.

- `signing_key.pem`: PKCS#8 PEM, created (mode 0600) on first use. `$LLM_FORGET_SIGNING_KEY` or a
  run's `signing_key` option names another file; the value `none` turns signing off.
- `fingerprint_keys/KEY_ID`: 32 random bytes (hex) per ledger, the HMAC key of its row
  fingerprints (see fingerprint.py); the ledger names KEY_ID, never the secret.

A public key is written as the base64 of its 32 raw bytes; its fingerprint (`key_id`) is the
first 16 hex digits of sha256 of those bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from ..errors import UserError

SIGNING_KEY = "signing_key.pem"
FINGERPRINT_KEYS = "fingerprint_keys"


def config_dir() -> Path:
    """`$LLM_FORGET_CONFIG`, else `$XDG_CONFIG_HOME/llm_forget`, else `~/.config/llm_forget`."""
    if os.environ.get("LLM_FORGET_CONFIG"):
        return Path(os.environ["LLM_FORGET_CONFIG"]).expanduser()
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config").expanduser() / "llm_forget"


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600; never overwrite an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def keygen(path: str | Path | None = None):
    """Create a new Ed25519 signing key at PATH (default: the per-user key). Refuses to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path).expanduser() if path else config_dir() / SIGNING_KEY
    if p.exists():
        raise UserError(f"{p} already exists; remove it first or choose another path")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        _write_private(p, pem)
    except OSError as e:
        raise UserError(f"cannot write the signing key {p}: {e.strerror}") from e
    return key, p


def load_signing_key(path: str | Path | None = None):
    """The Ed25519 private key to sign with: PATH, else `$LLM_FORGET_SIGNING_KEY`, else the per-user
    key (created on first use). None when the choice is `none` (unsigned entries)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    choice = str(path) if path else os.environ.get("LLM_FORGET_SIGNING_KEY", "")
    if choice.lower() == "none":
        return None
    p = Path(choice).expanduser() if choice else config_dir() / SIGNING_KEY
    if not p.exists():
        if choice:
            raise UserError(f"signing key {p} does not exist (create one with `llm-forget ledger keygen {p}`)")
        return keygen(p)[0]
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise UserError(f"{p} is not an unencrypted PEM private key ({e})") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{p} is not an Ed25519 key")
    return key


def public_b64(key) -> str:
    """base64 of the 32 raw bytes of a private key's public half."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def key_id(public: str) -> str:
    """Short fingerprint of a base64 public key: sha256(raw bytes)[:16 hex]."""
    return hashlib.sha256(base64.b64decode(public)).hexdigest()[:16]


def sign(key, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode()


def check(public: str, signature: str, message: bytes) -> bool:
    """Whether `signature` (base64) is the Ed25519 signature of `message` by `public` (base64)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public, validate=True)).verify(
            base64.b64decode(signature, validate=True), message)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def read_public(text_or_path: str) -> list[str]:
    """Public keys given as base64, as a file holding them (one per line, as ledger.pub), or as a
    PEM private key file (its public half)."""
    p = Path(text_or_path).expanduser()
    if p.is_file():
        text = p.read_text(encoding="utf-8").strip()
        if "PRIVATE KEY" in text:
            return [public_b64(load_signing_key(p))]
        found = [line.split()[0] for line in text.splitlines() if line.strip()]
    else:
        found = [text_or_path.strip()]
    try:
        if found and all(len(base64.b64decode(k, validate=True)) == 32 for k in found):
            return found
    except ValueError:
        pass
    raise UserError(f"{text_or_path} is not an Ed25519 public key (base64 of 32 bytes, or a file holding one)")


def fingerprint_secret(kid: str | None = None) -> tuple[str, bytes | None]:
    """(key id, secret) of a ledger's fingerprint key. With `kid`, the stored secret (None when this
    operator does not hold it); without, a new random key id and secret, stored (0600)."""
    d = config_dir() / FINGERPRINT_KEYS
    if kid:
        if not all(c in "0123456789abcdef" for c in kid):
            raise UserError(f"bad fingerprint key id {kid!r}")
        p = d / kid
        return kid, bytes.fromhex(p.read_text().strip()) if p.is_file() else None
    kid, secret = secrets.token_hex(8), secrets.token_bytes(32)
    try:
        _write_private(d / kid, secret.hex().encode())
    except OSError as e:
        raise UserError(f"cannot store the ledger's fingerprint key in {d}: {e.strerror}") from e
    return kid, secret
