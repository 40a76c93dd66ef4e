"""Does forgetting hold up? Attacks that try to bring forgotten knowledge back, and how much they recover.

Attacks (each run on the unlearned model AND on the retain model, the baseline forgetting should match):
- relearn: fine-tune an in-memory copy for k steps (default 10, 25, 50; AdamW, constant learning rate,
  answer-only loss) on a seeded sample of the forget set (default 10 %) or on retain rows, then measure
  the REST of the forget set (the rows never trained on). One run to max(k) measured at every k: with
  a constant learning rate this equals separate runs. On the retain model this is learning afresh.
- quantize: round-trip every nn.Linear weight through b-bit per-channel symmetric round-to-nearest
  (`quantize.quantize_rtn`, default b = 8 and 4).
- prompts: the forget questions asked differently: paraphrased questions (rows with
  `paraphrased_question`, as TOFU ships), other prompt templates, and the tokenizer's chat template
  when it has one (or without it when the suite uses it).
- in_context: k retain question/answer examples (seeded) before each forget question, all in the plain
  prompt template (no chat template).

Run: `llm-forget eval --suite robustness --model UNLEARNED --target-model ORIGINAL --retain-model RETAIN`
(other data: --var forget_data=... --var retain_data=...), or `attack(...)` below.

Forget metric: the mean over forget rows of the answer probability exp(−mean answer-token NLL) (higher =
the model knows the answers) and the mean NLL (lower = knows). Recovery of an attack (`recovery`):

    recovery = (after − before) / (target − before)

with `before` the attacked model's forget metric under the suite's standard evaluation, `after` the same
model's metric under the attack, and `target` the original (pre-unlearning) model's metric under the
standard evaluation, all on the same rows. 0 = nothing recovered, 1 = all the forgotten knowledge back
(> 1: beyond the target; < 0: the attack removed even more). Lower is better for an unlearned model;
the retain model's value is the floor that honest forgetting should match. The same formula holds for
the NLL (numerator and denominator both change sign).

Nothing is written to model folders; results hold numbers and row hashes, never forget-set text.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from pathlib import Path

import torch

from ..errors import UserError
from .quantize import quantize_model, quantize_rtn  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
DEFAULT_ATTACKS = {
    "relearn": {"data": "forget", "fraction": 0.1, "steps": [10, 25, 50], "learning_rate": 1e-4, "batch_size": 8,
                "seed": 0},
    "relearn_retain": {"data": "retain", "n_rows": 5, "steps": [10, 25, 50], "learning_rate": 1e-4,
                       "batch_size": 8, "seed": 0},
    "quantize": {"bits": [8, 4]},
    "prompts": {"paraphrased_question": True, "templates": ["Q: {question}\nA:", "{question}"], "chat": True},
    "in_context": {"shots": [1, 3], "seed": 0},
}
KINDS = {"relearn": "relearn", "relearn_retain": "relearn", "quantize": "quantize", "prompts": "prompts",
         "in_context": "in_context"}


# ------------------------------------------------------------------------------------------ formulas

def recovery(before: float, after: float, target: float) -> float:
    """(after − before) / (target − before): the fraction of the gap between the attacked model and the
    target model that the attack closes. 0 = nothing recovered, 1 = all; lower is better for an
    unlearned model. NaN when target == before (nothing was forgotten, so nothing can be recovered)."""
    gap = target - before
    if gap == 0 or not all(math.isfinite(x) for x in (before, after, target)):
        return float("nan")
    return (after - before) / gap


def few_shot_template(template: str, examples: list[dict]) -> str:
    """A prompt template with the example question/answer pairs in front (braces in them escaped)."""
    esc = lambda s: s.replace("{", "{{").replace("}", "}}")  # noqa: E731
    shots = "".join(esc(template.format(question=e["question"]) + " " + e["answer"].strip()) + "\n\n"
                    for e in examples)
    return shots + template


# ------------------------------------------------------------------------------------------ scoring

def forget_scores(model, encoder, rows: list[dict], batch_size: int = 32, question_key: str = "question") -> dict:
    """{"probability": mean exp(−nll), "nll": mean nll} over rows (answer tokens only)."""
    from .scoring import score_sequences

    seqs = encoder.qa_many([(r[question_key], r["answer"]) for r in rows])
    sc = score_sequences(model, seqs, encoder.tokenizer.pad_token_id, batch_size, full=[False] * len(seqs))
    nll = [x["nll"] for x in sc]
    return {"probability": sum(math.exp(-v) for v in nll) / len(nll), "nll": sum(nll) / len(nll)}


def _entry(before: dict, after: dict, target: dict) -> dict:
    return {"before": before["probability"], "after": after["probability"], "target": target["probability"],
            "recovery": recovery(before["probability"], after["probability"], target["probability"]),
            "nll_before": before["nll"], "nll_after": after["nll"], "nll_target": target["nll"],
            "nll_recovery": recovery(before["nll"], after["nll"], target["nll"])}


# ------------------------------------------------------------------------------------------ relearning

def relearn_steps(model, encoder, train_rows: list[dict], steps, *, learning_rate: float = 1e-4,
                  batch_size: int = 8, seed: int = 0, weight_decay: float = 0.0):
    """Fine-tune a deep copy of `model` on `train_rows` (answer-only loss, AdamW, constant learning rate,
    seeded shuffles); yields (k, model copy) after each k in `steps` (ascending). The input is untouched.
    Not on Trainer: the same fine-tune there gave the same NLLs in 9.2 s against 6.1 s (tiny-target,
    steps 10/25/50, 2-core x86 CPU; benchmarks/results/relearn_trainer.json)."""
    from ..data.encode import pad

    steps = sorted(int(k) for k in steps)
    m = copy.deepcopy(model)
    m.train()
    for p in m.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(m.parameters(), lr=learning_rate, weight_decay=weight_decay)
    enc = encoder.rows(train_rows)
    rng = random.Random(seed)
    device = next(m.parameters()).device
    order, done = [], 0
    for k in steps:
        while done < k:
            if len(order) < batch_size:
                perm = list(range(len(enc)))
                rng.shuffle(perm)
                order += perm
            idx, order = order[:batch_size], order[batch_size:]
            b = {n: t.to(device) for n, t in pad([enc[i] for i in idx], encoder.tokenizer.pad_token_id).items()}
            loss = m(**b).loss
            if not torch.isfinite(loss):
                raise UserError(f"relearning attack diverged at step {done + 1} (loss {float(loss)}); "
                                "lower its learning_rate")
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            done += 1
        m.eval()
        yield k, m
        m.train()


def _sample(rows: list[dict], n: int, seed: int) -> tuple[list[int], list[int]]:
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    return sorted(idx[:n]), sorted(idx[n:])


# ------------------------------------------------------------------------------------------ the suite

def load_attack_suite(suite: str | Path | dict = "robustness") -> dict:
    """A robustness suite: a shipped name, a YAML path or a dict with `datasets` (forget, retain) and
    `attacks` (missing attack options take the defaults in DEFAULT_ATTACKS)."""
    import yaml

    if isinstance(suite, dict):
        cfg = copy.deepcopy(suite)
    else:
        p = SUITES_DIR / f"{suite}.yaml"
        p = p if p.is_file() else Path(suite).expanduser()
        if not p.is_file():
            raise UserError(f"robustness suite {suite!r} is neither a shipped suite nor a YAML file")
        cfg = yaml.safe_load(p.read_text(encoding="utf-8"))
        if not isinstance(cfg, dict):
            raise UserError(f"robustness suite {p} must be a mapping with datasets and attacks")
    cfg.setdefault("name", "robustness")
    if not isinstance(cfg.get("attacks"), dict) or not cfg["attacks"]:
        raise UserError(f"suite {cfg['name']} has no attacks (a robustness suite needs an attacks: mapping)")
    for name, opts in list(cfg["attacks"].items()):
        kind = (opts or {}).get("kind", KINDS.get(name))
        if kind not in DEFAULT_ATTACKS:
            raise UserError(f"unknown attack {name!r}: give it kind: relearn, quantize, prompts or in_context")
        base = DEFAULT_ATTACKS[name] if KINDS.get(name) == kind else DEFAULT_ATTACKS[kind]
        cfg["attacks"][name] = {**base, **(opts or {}), "kind": kind}
    for need in ("forget",):
        if need not in cfg.get("datasets", {}):
            raise UserError(f"suite {cfg['name']} needs a {need} dataset")
    return cfg


def is_attack_suite(suite) -> bool:
    """True when `suite` names a robustness suite (a YAML with an `attacks:` mapping)."""
    import yaml

    if isinstance(suite, dict):
        return "attacks" in suite
    p = SUITES_DIR / f"{suite}.yaml"
    p = p if p.is_file() else Path(str(suite)).expanduser()
    if not p.is_file():
        return False
    try:
        cfg = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return False
    return isinstance(cfg, dict) and "attacks" in cfg


class _Subject:
    """One model under attack with its standard encoder."""

    def __init__(self, model, tok, cfg):
        from ..data.encode import Encoder

        self.model, self.tok = model, tok
        self.template = cfg.get("prompt_template", "Question: {question}\nAnswer:")
        self.chat = bool(cfg.get("chat_template", False))
        self.max_length = int(cfg.get("max_length", 256))
        self.enc = Encoder(tok, self.template, self.chat, self.max_length)

    def encoder(self, template=None, chat=None):
        from ..data.encode import Encoder

        return Encoder(self.tok, self.template if template is None else template,
                       self.chat if chat is None else chat, self.max_length)


def _load(m, dtype, device):
    from ..models import load_model, load_tokenizer
    from ..zoo import resolve_model_path

    if isinstance(m, tuple):
        return m
    path = resolve_model_path(str(m))
    model = load_model(path, dtype)
    if device:
        model = model.to(device)
    model.eval()
    return model, load_tokenizer(path)


def attack(model, target_model, suite="robustness", *, retain_model=None, rows: dict | None = None,
           batch_size: int = 32, data_dir: str | None = None, variables: dict | None = None,
           limit: int | None = None, dtype: str = "auto", device: str | None = None, only=None,
           output: str | Path | None = None) -> dict:
    """Run a robustness suite on `model` (unlearned), measuring recovery towards `target_model` (the model
    before unlearning) and, when `retain_model` is given, the same attacks on it as the baseline.

    Models: folders, zoo names, or (model, tokenizer) pairs already loaded. `rows`: {"forget": [...],
    "retain": [...]} instead of the suite's datasets. `only`: attack names to run. Returns
    {"summary": {ATTACK[_VARIANT]_recovery, ..._retain_recovery}, "attacks": {...}, ...}; with `output`,
    writes OUTPUT/robustness.json."""
    from .. import io
    from ..data.readers import read_rows, row_hash
    from .spec import subst as _subst

    t0 = time.perf_counter()
    cfg = load_attack_suite(suite)
    vars_ = {**(cfg.get("variables") or {}), **(variables or {})}
    if data_dir:
        vars_["data_dir"] = data_dir
    if rows is None:
        rows = {}
        for name, d in cfg["datasets"].items():
            spec = d["data"] if isinstance(d, dict) else d
            rows[name] = read_rows(_subst(str(spec), vars_, cfg["name"]))
    if limit:
        rows = {k: v[:limit] for k, v in rows.items()}
    forget = rows.get("forget") or []
    if len(forget) < 2:
        raise UserError("robustness attacks need at least 2 forget rows")
    if any("question" not in r or "answer" not in r for r in forget):
        raise UserError("robustness attacks need question/answer rows in the forget set")
    attacks = cfg["attacks"]
    if only:
        missing = [a for a in only if a not in attacks]
        if missing:
            raise UserError(f"attack {missing[0]!r} is not in suite {cfg['name']} ({', '.join(attacks)})")
        attacks = {a: attacks[a] for a in only}
    with torch.no_grad():
        subj = {"model": _Subject(*_load(model, dtype, device), cfg)}
        target = _Subject(*_load(target_model, dtype, device), cfg)
        if retain_model is not None:
            subj["retain"] = _Subject(*_load(retain_model, dtype, device), cfg)
    res = {"suite": {"name": cfg["name"], "attacks": {k: {kk: vv for kk, vv in v.items()} for k, v in attacks.items()}},
           "forget_ids": [row_hash(r) for r in forget], "attacks": {}, "summary": {}}
    cache: dict = {}

    def base(who: str, idx: tuple) -> dict:  # standard-evaluation scores, cached per row subset
        key = (who, idx)
        if key not in cache:
            s = target if who == "target" else subj[who]
            cache[key] = forget_scores(s.model, s.enc, [forget[i] for i in idx], batch_size)
        return cache[key]

    all_idx = tuple(range(len(forget)))
    for name, a in attacks.items():
        t = time.perf_counter()
        out = {}
        kind = a["kind"]
        if kind == "relearn":
            if a["data"] == "forget":
                n = a.get("n_rows") or max(1, round(float(a["fraction"]) * len(forget)))
                if n >= len(forget):
                    raise UserError(f"attack {name}: {n} relearning rows leave no forget rows to measure")
                train_idx, eval_idx = _sample(forget, n, int(a["seed"]))
                train = [forget[i] for i in train_idx]
            else:
                pool = rows.get(a["data"])
                if not pool:
                    raise UserError(f"attack {name}: dataset {a['data']!r} is missing or empty")
                n = int(a.get("n_rows") or max(1, round(float(a.get("fraction", 0.1)) * len(pool))))
                train = [pool[i] for i in _sample(pool, min(n, len(pool)), int(a["seed"]))[0]]
                eval_idx = list(all_idx)
            eval_idx = tuple(eval_idx)
            ev = [forget[i] for i in eval_idx]
            tgt = base("target", eval_idx)
            for who, s in subj.items():
                before = base(who, eval_idx)
                for k, m in relearn_steps(s.model, s.enc, train, a["steps"], learning_rate=float(a["learning_rate"]),
                                          batch_size=int(a["batch_size"]), seed=int(a["seed"])):
                    with torch.no_grad():
                        out.setdefault(f"steps_{k}", {})[who] = _entry(before, forget_scores(m, s.enc, ev, batch_size),
                                                                       tgt)
                del m
            out["n_train_rows"], out["n_eval_rows"] = len(train), len(eval_idx)
        elif kind == "quantize":
            tgt = base("target", all_idx)
            for bits in a["bits"]:
                for who, s in subj.items():
                    q = quantize_model(s.model, int(bits))
                    after = forget_scores(q, s.enc, forget, batch_size)
                    out.setdefault(f"{int(bits)}bit", {})[who] = _entry(base(who, all_idx), after, tgt)
                    del q
        elif kind == "prompts":
            tgt = base("target", all_idx)
            variants = []
            if a.get("paraphrased_question") and all(r.get("paraphrased_question") for r in forget):
                variants.append(("paraphrased_question", None, None, "paraphrased_question"))
            for j, tpl in enumerate(a.get("templates") or []):
                if "{question}" not in tpl:
                    raise UserError(f"attack {name}: template {tpl!r} has no {{question}}")
                variants.append((f"template_{j}", tpl, False, "question"))
            if a.get("chat"):
                has_chat = bool(getattr(target.tok, "chat_template", None))
                if target.chat:
                    variants.append(("no_chat_template", None, False, "question"))
                elif has_chat:
                    variants.append(("chat_template", None, True, "question"))
            for vname, tpl, chat, qkey in variants:
                for who, s in subj.items():
                    e = s.encoder(tpl, chat)
                    out.setdefault(vname, {})[who] = _entry(base(who, all_idx), forget_scores(s.model, e, forget,
                                                            batch_size, qkey), tgt)
                te = target.encoder(tpl, chat)
                out[vname]["target_attacked"] = forget_scores(target.model, te, forget, batch_size, qkey)["probability"]
                if tpl is not None:
                    out[vname]["template"] = tpl
        elif kind == "in_context":
            pool = rows.get("retain")
            if not pool:
                raise UserError(f"attack {name}: needs a retain dataset for the examples")
            if any("question" not in r for r in pool):
                raise UserError(f"attack {name}: retain rows must be question/answer rows")
            tgt = base("target", all_idx)
            for k in a["shots"]:
                ex = [pool[i] for i in _sample(pool, min(int(k), len(pool)), int(a["seed"]))[0]]
                for who, s in subj.items():
                    e = s.encoder(few_shot_template(s.template, ex), False)
                    after = forget_scores(s.model, e, forget, batch_size)
                    out.setdefault(f"shots_{int(k)}", {})[who] = _entry(base(who, all_idx), after, tgt)
        out["seconds"] = round(time.perf_counter() - t, 3)
        res["attacks"][name] = out
        for v, d in out.items():
            if isinstance(d, dict) and "model" in d:
                res["summary"][f"{name}_{v}_recovery"] = d["model"]["recovery"]
                if "retain" in d:
                    res["summary"][f"{name}_{v}_retain_recovery"] = d["retain"]["recovery"]
        logger.info("robustness: %s done in %.1fs", name, out["seconds"])
    res["summary"]["forget_probability"] = base("model", all_idx)["probability"]
    res["summary"]["target_forget_probability"] = base("target", all_idx)["probability"]
    if "retain" in subj:
        res["summary"]["retain_forget_probability"] = base("retain", all_idx)["probability"]
    res["wall_seconds"] = time.perf_counter() - t0
    from .suite import strict_json

    res = strict_json(res)  # a recovery of 0/0 (target = unlearned model) is null, named under not_computed
    if output:
        io.write_json(Path(output) / "robustness.json", res)
    return res
