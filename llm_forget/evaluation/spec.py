"""The suite format: a YAML file (or dict) that names datasets and the metric groups to run on
each. Reading and checking it, substituting {variables} in data specs, and reading the rows.
The format is documented in suite.py and in the README ("Suite YAML").
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from ..errors import UserError, closest

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
GROUP_ORDER = ("token", "reference", "generation", "knowmem", "verbmem", "truth_ratio", "mia", "forget_quality",
               "model_utility", "consistency", "text_ppl", "scope")


def shipped_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.yaml"))}


def load_suite(suite: str | Path | dict) -> dict:
    """A suite as a dict: a shipped name (quick, tofu, muse), a YAML path, or a dict."""
    import yaml

    if isinstance(suite, dict):
        cfg = copy.deepcopy(suite)
        cfg.setdefault("name", "custom")
        cfg["_source"] = None
    else:
        found = shipped_suites()
        p = found.get(str(suite)) or Path(suite).expanduser()
        if not p.is_file():
            raise UserError(f"suite {suite!r} is neither a shipped suite ({', '.join(found)}) nor a YAML file"
                            f"{closest(suite, found)}")
        try:
            cfg = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise UserError(f"suite {p} is not valid YAML: {str(e).splitlines()[0]}") from e
        if not isinstance(cfg, dict):
            raise UserError(f"suite {p} must be a mapping with datasets and metrics")
        cfg.setdefault("name", p.stem)
        cfg["_source"] = str(p)
    if not isinstance(cfg.get("datasets"), dict) or not isinstance(cfg.get("metrics"), dict):
        raise UserError(f"suite {cfg['name']} needs 'datasets' and 'metrics' mappings")
    unknown = set(cfg["metrics"]) - set(GROUP_ORDER)
    if unknown:
        u = sorted(unknown)[0]
        raise UserError(f"suite {cfg['name']}: unknown metric group {u!r}{closest(u, GROUP_ORDER)}; "
                        f"known: {', '.join(GROUP_ORDER)}")
    for g in ("generation", "knowmem", "verbmem"):
        bs = cfg["metrics"][g].get("batch_size") if isinstance(cfg["metrics"].get(g), dict) else None
        if bs is not None and (not isinstance(bs, int) or isinstance(bs, bool) or bs < 1):
            raise UserError(f"suite {cfg['name']}: {g} batch_size must be a positive integer, got {bs!r}")
    mia = cfg["metrics"].get("mia")
    for k in (mia.get("ks") or ()) if isinstance(mia, dict) else ():
        if not isinstance(k, (int, float)) or isinstance(k, bool) or not 0 < k <= 100:
            raise UserError(f"suite {cfg['name']}: Min-K% k must be in (0, 100], got {k!r}")
    if isinstance(mia, dict) and mia.get("privleak"):
        ks = [f"{float(k):g}" for k in mia.get("ks", (20, 40))]
        attacks = ["loss", "zlib", "reference"] + [f"mink_{k}" for k in ks] + \
            ([f"minkpp_{k}" for k in ks] if mia.get("minkpp", True) else [])
        if mia["privleak"] not in attacks:
            raise UserError(f"suite {cfg['name']}: mia privleak attack {mia['privleak']!r} is not computed; "
                            f"one of {', '.join(attacks)}")
    sc = cfg["metrics"].get("scope", {"set": ""})
    if not isinstance(sc, dict) or not isinstance(sc.get("set"), str):
        raise UserError(f"suite {cfg['name']}: scope needs {{set: DATASET}}, a dataset of rows with split and form "
                        "fields (e.g. builtin:scope)")
    for name, d in list(cfg["datasets"].items()):
        if isinstance(d, str):
            cfg["datasets"][name] = {"data": d}
        elif not isinstance(d, dict) or "data" not in d:
            raise UserError(f"suite {cfg['name']}: dataset {name} needs a 'data' spec")
    return cfg


def subst(text: str, variables: dict, suite: str) -> str:
    class Missing(dict):
        def __missing__(self, key):
            hint = "--data-dir DIR" if key == "data_dir" else f"--var {key}=VALUE"
            raise UserError(f"suite {suite} needs {{{key}}}: pass {hint}")

    return text.format_map(Missing(variables))


def resolve_datasets(cfg: dict, variables: dict, limit: int | None = None) -> dict[str, list[dict]]:
    """Read every dataset the suite's metrics use (data specs with {variables} substituted)."""
    from ..data.readers import read_rows

    used = used_sets(cfg)
    rows = {}
    for name in used:
        if name not in cfg["datasets"]:
            raise UserError(f"suite {cfg['name']}: metrics use dataset {name!r}, which is not under datasets"
                            f"{closest(name, cfg['datasets'])}")
        d = cfg["datasets"][name]
        r = read_rows(subst(str(d["data"]), variables, cfg["name"]))
        if "rows" in d:
            a, b = d["rows"]
            if b > len(r):
                raise UserError(f"dataset {name}: rows [{a}, {b}) asked for, but {d['data']} has {len(r)} rows")
            r = r[a:b]
        if limit:
            r = r[:limit]
        rows[name] = r
    return rows


def as_list(x) -> list:
    return [] if x is None else [x] if isinstance(x, str) else list(x)


def used_sets(cfg: dict) -> list[str]:
    m = cfg["metrics"]
    used = []
    for g in ("token", "reference"):
        used += as_list(m.get(g))
    for g in ("generation", "knowmem", "verbmem", "consistency"):
        if g in m:
            used += as_list(m[g].get("sets") if isinstance(m[g], dict) else m[g])
    if "truth_ratio" in m:
        used += as_list(m["truth_ratio"].get("forget")) + as_list(m["truth_ratio"].get("retain"))
    if "mia" in m:
        used += [m["mia"]["members"], m["mia"]["nonmembers"]]
    if "forget_quality" in m:
        used.append(m["forget_quality"]["set"])
    if "scope" in m:
        used.append(m["scope"]["set"])
    return list(dict.fromkeys(used))


def spec_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def retain_suite(cfg: dict) -> dict:
    """The part of a suite a retain model must run: forget truth ratios, MIA AUCs, generations of
    the consistency sets. Model utility, consistency etc. are not needed from it."""
    m = cfg["metrics"]
    keep = {}
    if "mia" in m:
        keep["mia"] = m["mia"]
    if "forget_quality" in m:  # its per-item forget truth ratios; forget quality itself is the model's
        keep["truth_ratio"] = {"forget": [m["forget_quality"]["set"]],
                               "correct": m.get("truth_ratio", {}).get("correct", "paraphrased_answer")}
    if "consistency" in m:
        keep["generation"] = {**m.get("generation", {}), "sets": as_list(m["consistency"]["sets"])}
    r = {**cfg, "metrics": keep}
    r.pop("_source", None)
    return r


def later_imports(m: dict) -> list[str]:
    """Modules that later metric groups import: rouge-score (it pulls in nltk, ≈ 1.5 s) and
    scipy.stats (≈ 0.7 s)."""
    return (["rouge_score.rouge_scorer"] if {"generation", "knowmem", "verbmem"} & set(m) else []) + \
        (["scipy.stats"] if "forget_quality" in m else [])


def import_all(mods: list[str]) -> None:
    import importlib

    for x in mods:
        importlib.import_module(x)


def check_rows(cfg: dict, rows: dict[str, list[dict]], allow_overlap: bool = False) -> None:
    """Before any work: every row a group needs has the fields it reads, and members never occur
    among non-members (nor forget rows among retain rows)."""
    from ..data.readers import overlap

    m = cfg["metrics"]
    tr = m.get("truth_ratio", {})
    for s in as_list(tr.get("forget")) + as_list(tr.get("retain")):
        have = sum(bool(r.get("perturbed_answer")) and "question" in r for r in rows[s])
        if have < len(rows[s]):
            raise UserError(f"suite {cfg['name']}: truth ratio on dataset {s} needs question rows with "
                            f"perturbed_answer; {have} of {len(rows[s])} have them")
    for g in ("generation", "knowmem", "consistency"):  # consistency sets are generated for greedy agreement
        for s in as_list(m[g].get("sets") if isinstance(m.get(g), dict) else m.get(g)):
            if any("question" not in r or "answer" not in r for r in rows[s]):
                raise UserError(f"suite {cfg['name']}: {g} on dataset {s} needs question/answer rows")
    if "scope" in m:
        s = m["scope"]["set"]
        have = sum(all(isinstance(r.get(k), str) for k in ("question", "answer", "split", "form")) for r in rows[s])
        if have < len(rows[s]):
            raise UserError(f"suite {cfg['name']}: scope on dataset {s} needs question/answer rows with split and "
                            f"form fields (e.g. builtin:scope); {have} of {len(rows[s])} have them")
    pairs = [(m["mia"]["members"], m["mia"]["nonmembers"])] if "mia" in m else []
    if "forget" in rows and "retain" in rows:
        pairs.append(("forget", "retain"))
    for a, b in pairs:
        n = overlap(rows[a], rows[b])
        if n and not allow_overlap:
            raise UserError(f"{n} of {len(rows[a])} {a} rows also occur in the {b} set; remove them or pass "
                            "--allow_overlap")
