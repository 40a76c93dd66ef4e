"""Read forget / retain / holdout rows from wherever the user keeps them.

A data spec is one of:
- `builtin:SPLIT` (forget, retain, holdout, train, all): the built-in benchmark;
  `builtin:refusals` gives the built-in "I don't know" answers; `builtin:scope` every person's facts
  asked directly, paraphrased, reversed and one hop away (`llm_forget.data.scope`, with `split`/`form`);
- a `.json` (list of rows, or `{"data": [...]}`), `.jsonl`, `.csv` or `.txt` file (one row per
  non-empty line, read as raw text);
- a folder saved by `datasets.Dataset.save_to_disk`;
- `hf:NAME[:CONFIG][@SPLIT]`: a Hub dataset, read from the local mirror (`LLM_FORGET_DATA_DIR`)
  when it holds it, else through `datasets` (see `llm_forget.data.hub`).

Rows are dicts. Question/answer rows use TOFU's field names (`question`, `answer`, and for
truth ratios `paraphrased_answer`, `perturbed_answer`); `prompt`/`completion` are accepted as
aliases. Raw-text rows have a `text` field.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from ..errors import UserError

ALIASES = {"prompt": "question", "completion": "answer", "src": "question", "gt": "answer"}


def read_rows(spec: str) -> list[dict]:
    """All rows of a data spec, normalised (aliases renamed); see the module docstring."""
    rows = _read(spec)
    if not isinstance(rows, list) or not rows:
        raise UserError(f"data {spec} is empty")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise UserError(f"data {spec}: row {i} is not an object with fields")
        r = {ALIASES.get(k, k) if ALIASES.get(k) not in r else k: v for k, v in r.items()}
        if not (("question" in r and "answer" in r) or "text" in r):
            raise UserError(f"data {spec}: row {i} has neither question/answer nor text fields "
                            f"(fields: {', '.join(sorted(r)) or 'none'})")
        for k in ("question", "answer", "text"):
            if k in r and not isinstance(r[k], str):
                raise UserError(f"data {spec}: row {i} field {k!r} is not a string")
        out.append(r)
    return out


def _read(spec: str):
    if spec.startswith("builtin:"):
        from . import benchmark

        name = spec.split(":", 1)[1]
        if name == "refusals":
            return benchmark.refusals()
        if name == "scope":
            from .scope import scope_rows

            return scope_rows()
        try:
            return benchmark.split(name)
        except ValueError as e:
            raise UserError(f"{e}; choose builtin:forget, retain, holdout, train, all, refusals or scope") from e
    if spec.startswith("hf:"):
        from . import hub

        local = hub.mirror_path(spec)
        if local is None:
            return hub.load_rows(spec)
        spec = str(local)
    p = Path(spec).expanduser()
    if not p.exists():
        raise UserError(f"data file {spec} does not exist")
    if p.is_dir():
        try:
            from datasets import load_from_disk

            return [dict(r) for r in load_from_disk(str(p))]
        except FileNotFoundError as e:
            raise UserError(f"data folder {spec} is not a saved datasets.Dataset") from e
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"data file {spec} is not UTF-8 text (byte {e.start})") from e
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
            return data.get("data", data) if isinstance(data, dict) else data
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise UserError(f"data file {spec} is not valid JSON: {e.msg} at line {e.lineno}") from e
    if suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    if suffix in (".txt", ".text", ".md"):
        return [{"text": line} for line in text.splitlines() if line.strip()]
    raise UserError(f"data file {spec}: unsupported extension {suffix!r} (use .json, .jsonl, .csv, .txt)")


def row_hash(row: dict) -> str:
    """sha256 of a row's content fields: how a row is named in ledgers, results and logs."""
    keys = [k for k in ("question", "answer", "text") if k in row]
    blob = json.dumps({k: row[k] for k in keys}, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def overlap(a: list[dict], b: list[dict]) -> int:
    """How many rows of `a` also occur (same content) in `b`."""
    hb = {row_hash(r) for r in b}
    return sum(row_hash(r) in hb for r in a)
