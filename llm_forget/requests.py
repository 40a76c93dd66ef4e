"""Deletion requests: what to forget, in a file.

A request file is JSON (one object, or a list of objects, or `{"requests": [...]}`), JSONL
(one object per line) or YAML (same shapes). Each request has a `kind`:

    {"kind": "items", "rows": [{"question": ..., "answer": ...}, ...]}       rows given inline
    {"kind": "items", "data": "forget.jsonl"}                                every row of a data spec
    {"kind": "items", "data": "builtin:all", "sha256": ["<row hash>", ...]}  rows of a spec named by hash
    {"kind": "concept", "data": "builtin:all", "field": "person", "value": "Ada Brask"}
    {"kind": "concept", "data": "builtin:all", "filter": {"fact": ["birthplace", "birth_year"]}}
    {"kind": "task", "data": "builtin:forget"}
    {"kind": "concept", "description": "Basil Mahfouz Al-Kuwaiti"}                  zero-shot: a name only
    {"kind": "concept", "description": "Ada Brask", "examples": [rows], "neighbours": ["Bram Corvel", ...]}
    {"kind": "concept", "description": ["Basil Mahfouz Al-Kuwaiti", "Nikolai Abilov"]}     several, in one run

`concept` (or its synonym `class`) selects every row whose fields match: `field`/`value` is
shorthand for a one-field `filter`; a filter value that is a list matches any of its values;
all fields must match. `task` forgets a whole dataset: here it is unlearned with the
recipe's method on every row of that dataset (no task-vector negation: that is
`llm_forget.editing.task_vectors`, applied by `llm-forget edit`).
A `concept` with a `description` names what to forget without rows (zero-shot), optionally with a
few `examples` rows (few-shot) and `neighbours` (names of the same kind that must stay); it takes no
data or filter: `llm-forget unlearn` builds its forget set by probing the model (llm_forget/probe.py).
A list of descriptions is one request for all of them: probed together and unlearned in one run with one
retain budget (requests served one after another each spend their own budget, so the costs add up).
Optional: `id` (default: `req-` + the first 12 hex digits of the sha256 of the request's
canonical JSON, so the same request always gets the same id).

A config's `request` is `FILE` (a file holding exactly one request) or `FILE#N` / `FILE#ID`
(the N-th request, 0-based, or the one with that id).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

KINDS = ("items", "concept", "class", "task")


@dataclass
class Request:
    kind: str
    id: str
    data: str | None = None
    rows: list[dict] | None = None
    sha256: list[str] | None = None
    filter: dict = field(default_factory=dict)
    description: str | list[str] | None = None  # a name, or several forgotten together (one run, one budget)
    examples: list[dict] | None = None
    neighbours: list[str] | None = None

    @property
    def names(self) -> list[str]:
        """What a described request names, as a list (one entry for a single description)."""
        d = self.description
        return [] if d is None else [d] if isinstance(d, str) else list(d)

    def resolve(self) -> list[dict]:
        """The forget rows this request names (UserError when it names none)."""
        return resolve(self)


def _canonical_id(obj: dict) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    return "req-" + hashlib.sha256(blob).hexdigest()[:12]


def parse_request(obj, where: str = "request") -> Request:
    """One request object -> Request, every field checked."""
    if not isinstance(obj, dict):
        raise UserError(f"{where} is not an object with a 'kind' field")
    kind = obj.get("kind")
    if kind not in KINDS:
        raise UserError(f"{where}: kind must be one of items, concept, class, task (got {kind!r})")
    known = {"kind", "id", "data", "rows", "sha256", "field", "value", "filter", "note", "description", "examples",
             "neighbours"}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    rid = obj.get("id") or _canonical_id(obj)
    if not isinstance(rid, str):
        raise UserError(f"{where}: id must be a string")
    data, rows, hashes = obj.get("data"), obj.get("rows"), obj.get("sha256")
    if data is not None and not isinstance(data, str):
        raise UserError(f"{where}: data must be a data spec string (a path, builtin:SPLIT, hf:NAME)")
    if any(k in obj for k in ("description", "examples", "neighbours")):
        return _described(obj, kind, rid, where)
    if kind == "items":
        if (rows is None) == (data is None):
            raise UserError(f"{where}: an items request needs exactly one of 'rows' or 'data'")
        if rows is not None and (not isinstance(rows, list) or not rows):
            raise UserError(f"{where}: rows must be a non-empty list of rows")
        if hashes is not None:
            if data is None:
                raise UserError(f"{where}: sha256 selects rows of 'data'; give data too")
            if not isinstance(hashes, list) or not all(isinstance(h, str) and len(h) == 64 for h in hashes):
                raise UserError(f"{where}: sha256 must be a list of 64-hex-digit row hashes")
        return Request("items", rid, data=data, rows=rows, sha256=hashes)
    if rows is not None or hashes is not None:
        raise UserError(f"{where}: rows/sha256 belong to items requests; a {kind} request takes data")
    if data is None:
        raise UserError(f"{where}: a {kind} request needs 'data' (a data spec)")
    if kind == "task":
        return Request("task", rid, data=data)
    flt = obj.get("filter")
    if flt is not None and not isinstance(flt, dict):
        raise UserError(f"{where}: filter must be a mapping of field: value (or list of values)")
    flt = dict(flt or {})
    if "field" in obj or "value" in obj:
        if not isinstance(obj.get("field"), str) or "value" not in obj:
            raise UserError(f"{where}: give both 'field' (a name) and 'value'")
        flt[obj["field"]] = obj["value"]
    if not flt:
        raise UserError(f"{where}: a {kind} request needs field/value or a filter")
    return Request("concept", rid, data=data, filter=flt)


def _described(obj: dict, kind: str, rid: str, where: str) -> Request:
    """A concept named by a description (zero-shot), with optional examples (few-shot) and neighbours."""
    if kind not in ("concept", "class"):
        raise UserError(f"{where}: description/examples/neighbours belong to concept requests (got kind {kind!r})")
    desc = obj.get("description")
    names = [desc] if isinstance(desc, str) else desc
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise UserError(f"{where}: a described concept needs 'description', a non-empty string (e.g. a name) "
                        "or a non-empty list of them")
    names = [n.strip() for n in names]
    if len({n.casefold() for n in names}) < len(names):
        raise UserError(f"{where}: description names the same thing twice")
    extra = sorted(k for k in ("data", "rows", "sha256", "field", "value", "filter") if k in obj)
    if extra:
        raise UserError(f"{where}: a described concept takes no {', '.join(extra)}; its forget set is built by "
                        "probing the model (give example rows as 'examples')")
    examples = obj.get("examples")
    if examples is not None:
        if not isinstance(examples, list) or not examples:
            raise UserError(f"{where}: examples must be a non-empty list of question/answer rows")
        examples = _normalize(examples, where)
    nbs = obj.get("neighbours")
    if nbs is not None:
        if not isinstance(nbs, list) or not nbs or not all(isinstance(n, str) and n.strip() for n in nbs):
            raise UserError(f"{where}: neighbours must be a non-empty list of names")
        if any(n.strip().casefold() == d.casefold() for n in nbs for d in names):
            raise UserError(f"{where}: neighbours must not include the description itself")
    return Request("concept", rid, description=names[0] if isinstance(desc, str) else names, examples=examples,
                   neighbours=nbs)


def load_requests(path: str | Path) -> list[Request]:
    """Every request in a JSON / JSONL / YAML request file, in order."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"request file {path} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"request file {path} is not UTF-8 text") from e
    suffix = p.suffix.lower()
    try:
        if suffix == ".jsonl":
            objs = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".json":
            objs = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            objs = yaml.safe_load(text)
        else:
            raise UserError(f"request file {path}: use .json, .jsonl, .yaml or .yml")
    except json.JSONDecodeError as e:
        raise UserError(f"request file {path} is not valid JSON: {e.msg} at line {e.lineno}") from e
    except Exception as e:
        if isinstance(e, UserError):
            raise
        raise UserError(f"request file {path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if isinstance(objs, dict):
        objs = objs["requests"] if "requests" in objs and "kind" not in objs else [objs]
    if not isinstance(objs, list) or not objs:
        raise UserError(f"request file {path} holds no requests")
    reqs = [parse_request(o, f"{path}: request {i}") for i, o in enumerate(objs)]
    ids = [r.id for r in reqs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise UserError(f"request file {path}: duplicate request id(s) {', '.join(dup)}")
    return reqs


def select(ref: str) -> Request:
    """`FILE` (exactly one request), `FILE#N` (0-based) or `FILE#ID`."""
    path, _, which = str(ref).partition("#")
    reqs = load_requests(path)
    if not which:
        if len(reqs) != 1:
            raise UserError(f"request file {path} holds {len(reqs)} requests; pick one with {path}#N, "
                            "or apply them in order with `llm-forget stream`")
        return reqs[0]
    for r in reqs:
        if r.id == which:
            return r
    if which.isdigit() and int(which) < len(reqs):
        return reqs[int(which)]
    raise UserError(f"request file {path} has no request {which!r} (ids: {', '.join(r.id for r in reqs)})")


def describe(ref: str) -> tuple[str, str]:
    """(kind, id) of a request reference, without reading its data."""
    r = select(ref)
    return r.kind, r.id


def _normalize(rows: list, where: str) -> list[dict]:
    from .data.readers import ALIASES

    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise UserError(f"{where}: row {i} is not an object with fields")
        r = {ALIASES.get(k, k) if ALIASES.get(k) not in r else k: v for k, v in r.items()}
        if not (("question" in r and "answer" in r) or "text" in r):
            raise UserError(f"{where}: row {i} has neither question/answer nor text fields")
        for k in ("question", "answer", "text"):
            if k in r and not isinstance(r[k], str):
                raise UserError(f"{where}: row {i} field {k!r} is not a string")
        out.append(r)
    return out


def matches(row: dict, flt: dict) -> bool:
    """True when every filter field equals the row's value (a list value: any of them)."""
    for k, want in flt.items():
        have = row.get(k)
        if isinstance(want, list):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


def resolve(req: Request) -> list[dict]:
    """Rows named by a request."""
    from .data.readers import read_rows, row_hash

    where = f"request {req.id}"
    if req.description is not None:
        raise UserError(f"{where} names {req.description!r} by description only: its forget set is built by "
                        "probing a model (llm-forget unlearn, or llm_forget.probe.build_probes)")
    if req.kind == "items" and req.rows is not None:
        return _normalize(req.rows, where)
    rows = read_rows(req.data)
    if req.kind == "items" and req.sha256 is not None:
        want = set(req.sha256)
        picked = [r for r in rows if row_hash(r) in want]
        missing = len(want - {row_hash(r) for r in picked})
        if not picked:
            raise UserError(f"{where}: none of its {len(want)} row hashes occur in {req.data}")
        if missing:
            import logging

            logging.getLogger(__name__).warning("%s: %d of %d row hashes are not in %s", where, missing, len(want),
                                                req.data)
        return picked
    if req.kind == "concept":
        picked = [r for r in rows if matches(r, req.filter)]
        if not picked:
            fields = ", ".join(sorted(req.filter))
            raise UserError(f"{where}: no row of {req.data} matches the filter on {fields}")
        return picked
    return rows  # items with data, or task
