"""Hub datasets by id, with one local mirror for offline machines.

A spec `hf:NAME[:CONFIG][@SPLIT]` names a Hugging Face Hub dataset the way `datasets.load_dataset`
does (split `train` unless given), e.g. `hf:locuslab/TOFU:forget01_perturbed`,
`hf:Salesforce/wikitext:wikitext-2-v1@validation`, `hf:azhx/counterfact@train`.

The local mirror is a folder named by the environment variable `LLM_FORGET_DATA_DIR` (or by
`llm-forget eval --data-dir`). A spec is read from the mirror when the mirror holds it, so an
offline machine needs no Hub access at all; otherwise `datasets` loads it (from the Hub, or from
its own cache when `HF_HUB_OFFLINE=1`). Inside the mirror a dataset lives at
  1. the file that `KNOWN` names for it (the layout of TOFU's, ROME's and WikiText's own
     releases as plain files), or
  2. `NAME/CONFIG/SPLIT.{json,jsonl,csv,txt}` or a `datasets.save_to_disk` folder
     `NAME/CONFIG/SPLIT` (CONFIG is `default` when the spec has none).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError

ENV = "LLM_FORGET_DATA_DIR"
SUFFIXES = (".json", ".jsonl", ".csv", ".txt")

# (name, config, split) -> file inside the mirror. TOFU's *_perturbed configs carry the
# paraphrased / perturbed answers the truth ratio needs; its GitHub release names them as below.
# The CounterFact file is EasyEdit's 1,000-request subset of ROME's CounterFact (a mirror may hold
# a subset: recipes read the first n_requests rows).
KNOWN = {
    **{("locuslab/TOFU", f"{s}_perturbed", "train"): f"tofu/{s}.json" for s in ("forget01", "forget05", "forget10")},
    **{("locuslab/TOFU", s, "train"): f"tofu/{s}.json" for s in ("retain90", "retain95", "retain99")},
    ("locuslab/TOFU", "retain_perturbed", "train"): "tofu/retain_perturbed_400.json",
    ("locuslab/TOFU", "real_authors_perturbed", "train"): "tofu/real_authors_perturbed.json",
    ("locuslab/TOFU", "world_facts_perturbed", "train"): "tofu/world_facts_perturbed.json",
    ("Salesforce/wikitext", "wikitext-2-v1", "validation"): "text/wikitext2_valid.txt",
    ("Salesforce/wikitext", "wikitext-2-v1", "test"): "text/wikitext2_test.txt",
    ("azhx/counterfact", None, "train"): "editing/counterfact-edit-1k.json",
}


def parse(spec: str) -> tuple[str, str | None, str]:
    """'hf:NAME[:CONFIG][@SPLIT]' (the 'hf:' optional) -> (name, config or None, split)."""
    body = spec[3:] if spec.startswith("hf:") else spec
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    if not name or "/" not in name.strip("/"):
        raise UserError(f"data {spec}: a Hub dataset is hf:OWNER/NAME[:CONFIG][@SPLIT]")
    return name, config or None, split or "train"


def mirror_dir() -> Path | None:
    d = os.environ.get(ENV)
    return Path(d).expanduser() if d else None


def set_mirror(path) -> None:
    """Use `path` as the local mirror from now on (also for child processes)."""
    os.environ[ENV] = str(Path(path).expanduser())


def mirror_path(spec: str) -> Path | None:
    """The mirror's copy of a Hub spec, or None (no mirror set, or not in it)."""
    root = mirror_dir()
    if root is None:
        return None
    name, config, split = parse(spec)
    known = KNOWN.get((name, config, split))
    candidates = [root / known] if known else []
    base = root / name / (config or "default") / split
    candidates += [base.with_name(split + s) for s in SUFFIXES] + [base]
    return next((p for p in candidates if p.exists()), None)


def offline() -> bool:
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_rows(spec: str) -> list[dict]:
    """Rows of a Hub spec that is not in the mirror, through `datasets` (its cache when offline).
    Any failure is one UserError line naming the dataset and the mirror."""
    name, config, split = parse(spec)
    where = f"{ENV}={mirror_dir()}" if mirror_dir() else f"{ENV} is not set"
    if offline():
        hint = (f"the Hub is offline (HF_HUB_OFFLINE) and the local mirror does not hold it "
                f"({where}; see README: local data)")
    else:
        hint = f"and the local mirror does not hold it ({where})"
    try:
        from datasets import load_dataset

        ds = load_dataset(name, config, split=split)
    except Exception as e:  # offline, missing, gated: all the user's to fix
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"dataset hf:{name}{':' + config if config else ''}@{split} cannot be loaded: {hint}; "
                        f"datasets said: {first}") from e
    return [dict(r) for r in ds]
