"""Edit requests and readers for CounterFact and zsRE files in EasyEdit's field layout.

An `EditRequest` says: in `prompt` (which contains `subject`), the model should answer
`target_new` instead of `target_true`. Evaluation prompts ride along: rephrasings
(generalisation) and neighbourhood / locality prompts with their own answers.

EasyEdit CounterFact rows: prompt, subject, target_new, ground_truth, rephrase_prompt,
locality_prompt, locality_ground_truth (ROME's original layout with "{}" in the prompt and
requested_rewrite/paraphrase_prompts/neighborhood_prompts is read too).
EasyEdit zsRE rows: subject, src, alt (new answer), answers (true), rephrase, loc, loc_ans,
and optional portability prompts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class EditRequest:
    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None
    rephrase: list[str] = field(default_factory=list)
    neighbourhood: list[tuple[str, str]] = field(default_factory=list)  # (prompt, answer that must stay)
    portability: list[tuple[str, str]] = field(default_factory=list)  # (prompt, answer implied by the edit)
    case_id: str | int | None = None

    def __post_init__(self):
        if "{}" in self.prompt:
            self.prompt = self.prompt.replace("{}", self.subject)
        check(self)


def check(r: EditRequest) -> None:
    """UserError when the request cannot be edited (subject missing from its prompt, empty target)."""
    if not r.subject or not r.subject.strip():
        raise UserError(f"edit request {r.case_id}: empty subject")
    if r.subject not in r.prompt:
        raise UserError(f"edit request {r.case_id}: subject {r.subject!r} does not occur in its prompt {r.prompt!r}")
    if not r.target_new or not r.target_new.strip():
        raise UserError(f"edit request {r.case_id}: empty target_new")


def _load(path) -> list[dict]:
    if str(path).startswith("hf:"):  # a Hub dataset (ROME's layout on the Hub), or its mirror copy
        from ..data import hub

        local = hub.mirror_path(str(path))
        if local is None:
            return hub.load_rows(str(path))
        path = local
    p = Path(path)
    if not p.exists():
        raise UserError(f"edit data {path} does not exist")
    try:
        if p.suffix == ".jsonl":
            return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"edit data {path} is not valid JSON: {e.msg} at line {e.lineno}") from e
    if isinstance(data, dict):
        data = data.get("data", [data])
    if not isinstance(data, list) or not data:
        raise UserError(f"edit data {path} holds no rows")
    return data


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def counterfact_request(row: dict) -> EditRequest:
    """One CounterFact row (EasyEdit or ROME layout) -> EditRequest."""
    if "requested_rewrite" in row:  # ROME's layout
        rw = row["requested_rewrite"]
        return EditRequest(
            prompt=rw["prompt"].replace("{}", rw["subject"]), subject=rw["subject"],
            target_new=rw["target_new"]["str"], target_true=rw["target_true"]["str"],
            rephrase=_as_list(row.get("paraphrase_prompts")),
            neighbourhood=[(p, rw["target_true"]["str"]) for p in _as_list(row.get("neighborhood_prompts"))],
            case_id=row.get("case_id"))
    try:
        loc_ans = row.get("locality_ground_truth")
        return EditRequest(
            prompt=row["prompt"], subject=row["subject"], target_new=row["target_new"],
            target_true=row.get("ground_truth"), rephrase=_as_list(row.get("rephrase_prompt")),
            neighbourhood=[(p, a) for p, a in zip(_as_list(row.get("locality_prompt")), _as_list(loc_ans))],
            case_id=row.get("case_id"))
    except KeyError as e:
        raise UserError(f"CounterFact row {row.get('case_id', '?')} lacks field {e}") from None


def zsre_request(row: dict) -> EditRequest:
    """One zsRE row (EasyEdit layout: src, alt, answers, rephrase, loc, loc_ans) -> EditRequest."""
    try:
        true = _as_list(row.get("answers")) or _as_list(row.get("pred"))
        loc = row.get("loc")
        port = []
        for p in _as_list(row.get("portability")):
            if isinstance(p, dict) and "prompt" in p:
                port.append((p["prompt"], _as_list(p.get("ground_truth") or p.get("answer"))[0]))
        return EditRequest(
            prompt=row["src"], subject=row["subject"], target_new=row["alt"],
            target_true=true[0] if true else None, rephrase=_as_list(row.get("rephrase")),
            neighbourhood=[(loc, row["loc_ans"])] if loc and row.get("loc_ans") else [],
            portability=port, case_id=row.get("case_id", row.get("id")))
    except KeyError as e:
        raise UserError(f"zsRE row lacks field {e}") from None


def _convert(rows, make, path, strict: bool) -> list[EditRequest]:
    """Rows -> requests. Unless `strict`, rows that cannot be edited (empty new target, subject
    not in the prompt) are skipped and counted in a warning; missing fields always raise."""
    out, bad, first = [], [], None
    for i, row in enumerate(rows):
        try:
            out.append(make(row))
        except UserError as e:
            if strict or "lacks field" in str(e):
                raise
            bad.append(i)
            first = first or str(e)
    if bad and not out:
        raise UserError(f"{path}: none of its {len(bad)} rows can be edited; first: {first}")
    if bad:
        logger.warning("%s: skipped %d rows that cannot be edited (row indices %s)", path, len(bad), bad[:10])
    return out


def read_counterfact(path, limit: int | None = None, strict: bool = False) -> list[EditRequest]:
    return _convert(_load(path)[:limit], counterfact_request, path, strict)


def read_zsre(path, limit: int | None = None, strict: bool = False) -> list[EditRequest]:
    return _convert(_load(path)[:limit], zsre_request, path, strict)


def read_requests(path, fmt: str = "auto", limit: int | None = None, strict: bool = False) -> list[EditRequest]:
    """Read edit requests; `fmt` is counterfact, zsre or auto (decided by the first row's fields)."""
    rows = _load(path)[:limit]
    if fmt == "auto":
        fmt = "zsre" if "src" in rows[0] else "counterfact"
    if fmt == "counterfact":
        return _convert(rows, counterfact_request, path, strict)
    if fmt == "zsre":
        return _convert(rows, zsre_request, path, strict)
    raise UserError(f"unknown edit data format {fmt!r}; choose counterfact, zsre or auto")
