"""What a card's metadata says about datasets and the base model, without leaking the file system.

- `role_of(metric)`: which evaluated set a summary metric belongs to (`retain_probability` ->
  retain, `real_authors_truth_ratio` -> real_authors); set-pair metrics go to the set they judge:
  MIA AUC, PrivLeak and forget quality to forget (members), model utility and knowmem to retain.
- `dataset_of(role, spec)`: (type, name, split) of one evaluated set, for the model-index:
  the built-in benchmark is `llm_forget/builtin` with the set as split, a Hub dataset its id,
  a local file the format a `datasets.load_dataset` builder reads (`json`, `csv`, ...) with the
  file's name only, never its folder.
- `base_model_of(model)`: a Hub id when known, the zoo name for zoo models, the original base for a
  model that is itself a run folder's output, else None: never a local path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..inputs import is_unset

ROLES = ("forget", "retain", "holdout", "real_authors", "world_facts")
TO_FORGET = ("mia_", "privleak", "forget_quality")
TO_RETAIN = ("model_utility", "knowmem_")
ZOO_HUB = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text", ".parquet": "parquet"}


def role_of(metric: str, roles=ROLES) -> str:
    """The evaluated set a summary key belongs to (module doc); unknown keys go to `evaluation`."""
    for r in sorted(roles, key=len, reverse=True):
        if metric.startswith(r + "_"):
            return r
    if metric.startswith(TO_FORGET):
        return "forget"
    if metric.startswith(TO_RETAIN):
        return "retain"
    return "evaluation"


def dataset_of(role: str, spec: str | None) -> tuple[str, str, str]:
    """(dataset type, dataset name, split) of one evaluated set (module doc)."""
    spec = str(spec or "")
    if spec.startswith("builtin:"):
        return "llm_forget/builtin", "llm_forget built-in benchmark", spec.split(":", 1)[1] or role
    if spec.startswith("hf:"):
        name, _, split = spec[3:].partition("@")
        return name.split(":")[0], name.split(":")[0], split or role
    if spec.startswith("request:"):
        return "llm_forget/deletion-request", f"deletion request {spec.split(':', 1)[1]}", role
    if not is_unset(spec):
        p = Path(spec.split("#")[0])
        return FORMATS.get(p.suffix.lower(), "local-file"), p.name, role
    return "llm_forget/eval-set", role.replace("_", " "), role


def _zoo_name(p: Path) -> str | None:
    from ..zoo import SOURCES

    if p.parent.name != "zoo":
        return None
    for name in sorted(SOURCES, key=len, reverse=True):
        if p.name == name or re.fullmatch(re.escape(name) + r"-[0-9a-f]+", p.name):
            return name
    return None


def _hub_id(s: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", s)) and not Path(s).expanduser().exists()


def base_model_of(model: str | None, depth: int = 0) -> str | None:
    """A Hub id, a zoo name, or None (module doc)."""
    if not model or depth > 8:
        return None
    from ..zoo import SOURCES

    if model in SOURCES:
        return ZOO_HUB.get(model, model)
    p = Path(model).expanduser()
    if not p.exists():
        return model if _hub_id(model) else None
    p = p.resolve()
    zoo = _zoo_name(p)
    if zoo:
        return ZOO_HUB.get(zoo, zoo)
    for results in ([p.parent / "results.json"] if p.name == "model" else []) + [p / "results.json"]:
        if results.is_file():
            try:
                up = json.loads(results.read_text(encoding="utf-8")).get("model")
            except (OSError, ValueError):
                up = None
            if up and Path(str(up)).expanduser().resolve() != p:
                return base_model_of(up, depth + 1)
    for cfg in ("adapter_config.json", "config.json"):
        try:
            d = json.loads((p / cfg).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        name = d.get("base_model_name_or_path") or d.get("_name_or_path") or ""
        if name and _hub_id(name):
            return name
    return None


def scrub(value):
    """A value for the card: strings that look like local paths become `<local path>`."""
    if isinstance(value, str) and (value.startswith(("/", "~", "./", "../")) or re.match(r"^[A-Za-z]:\\", value)
                                   or (len(value) < 4096 and "/" in value and Path(value).exists())):
        return "<local path>"
    return value
