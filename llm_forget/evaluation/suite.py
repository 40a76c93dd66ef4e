"""Evaluation suites: a YAML file names datasets and the metric groups to run on each;
`evaluate()` runs them on a model and writes `results.json`.

Suite YAML (see llm_forget/suites/*.yaml, also reachable as eval/ at the repository root):

    name: quick
    prompt_template: "Question: {question}\\nAnswer:"   # or chat_template: true
    max_length: 256
    variables: {forget_split: forget01}               # defaults for {name} in data specs
    datasets:
      forget: {data: "{data_dir}/{forget_split}.json"}
      holdout: {data: "{data_dir}/retain90.json", rows: [3560, 3600]}
    metrics:
      token: [forget, retain, holdout]                # one teacher-forced pass per set
      truth_ratio: {forget: [forget], retain: [retain]}
      generation: {sets: [forget, retain], max_new_tokens: 200, stop: ["\\nQuestion:"]}  # batch_size: 2x --batch-size
      knowmem: {sets: [...], max_new_tokens: 32}       # ROUGE-L F1 of QA answers
      verbmem: {sets: [...], prefix_tokens: 128, max_new_tokens: 128}
      mia: {members: forget, nonmembers: holdout, headline: loss}
      forget_quality: {set: forget}
      model_utility: [retain_probability, retain_rougeL_recall, retain_truth_ratio]
      consistency: {sets: [forget, retain]}
      text_ppl: {data: "{text_file}", window: 512, stride: 256, max_tokens: 20000}

Performance design: each set gets ONE teacher-forced scoring pass (`token:SET`) that covers the
answer, the paraphrased answer and every perturbed answer of every row; truth ratio, MIA, forget
quality and model utility are then arithmetic on stored per-item numbers; on the consistency
sets the retrained model runs on the same answer batches, so next-token KL costs no pass of the
evaluated model. Each generating metric generates once per set (`generation:SET`), with finished
rows leaving the batch; knowmem, ROUGE and greedy agreement reuse it.
Results are written at the end and whenever 10 s of work are unsaved, and a re-run skips groups
already computed for the same model and the same group settings (unless `overwrite`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import platform
import threading
import time
from pathlib import Path

from ..errors import UserError, closest

logger = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
GROUP_ORDER = ("token", "reference", "generation", "knowmem", "verbmem", "truth_ratio", "mia", "forget_quality",
               "model_utility", "consistency", "text_ppl")


# ------------------------------------------------------------------------------------------ suites

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
    for name, d in list(cfg["datasets"].items()):
        if isinstance(d, str):
            cfg["datasets"][name] = {"data": d}
        elif not isinstance(d, dict) or "data" not in d:
            raise UserError(f"suite {cfg['name']}: dataset {name} needs a 'data' spec")
    return cfg


def _subst(text: str, variables: dict, suite: str) -> str:
    class Missing(dict):
        def __missing__(self, key):
            hint = "--data-dir DIR" if key == "data_dir" else f"--var {key}=VALUE"
            raise UserError(f"suite {suite} needs {{{key}}}: pass {hint}")

    return text.format_map(Missing(variables))


def resolve_datasets(cfg: dict, variables: dict, limit: int | None = None) -> dict[str, list[dict]]:
    """Read every dataset the suite's metrics use (data specs with {variables} substituted)."""
    from ..data.readers import read_rows

    used = _used_sets(cfg)
    rows = {}
    for name in used:
        if name not in cfg["datasets"]:
            raise UserError(f"suite {cfg['name']}: metrics use dataset {name!r}, which is not under datasets"
                            f"{closest(name, cfg['datasets'])}")
        d = cfg["datasets"][name]
        r = read_rows(_subst(str(d["data"]), variables, cfg["name"]))
        if "rows" in d:
            a, b = d["rows"]
            if b > len(r):
                raise UserError(f"dataset {name}: rows [{a}, {b}) asked for, but {d['data']} has {len(r)} rows")
            r = r[a:b]
        if limit:
            r = r[:limit]
        rows[name] = r
    return rows


def _as_list(x) -> list:
    return [] if x is None else [x] if isinstance(x, str) else list(x)


def _used_sets(cfg: dict) -> list[str]:
    m = cfg["metrics"]
    used = []
    for g in ("token", "reference"):
        used += _as_list(m.get(g))
    for g in ("generation", "knowmem", "verbmem", "consistency"):
        if g in m:
            used += _as_list(m[g].get("sets") if isinstance(m[g], dict) else m[g])
    if "truth_ratio" in m:
        used += _as_list(m["truth_ratio"].get("forget")) + _as_list(m["truth_ratio"].get("retain"))
    if "mia" in m:
        used += [m["mia"]["members"], m["mia"]["nonmembers"]]
    if "forget_quality" in m:
        used.append(m["forget_quality"]["set"])
    return list(dict.fromkeys(used))


def _spec_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------ running

class Evaluator:
    """Runs a suite's metric groups for one loaded model into a results dict (in memory)."""

    def __init__(self, model, tokenizer, cfg: dict, rows: dict[str, list[dict]], results: dict, *,
                 batch_size: int = 32, retain: dict | None = None, retrained=None, reference=None,
                 variables: dict | None = None, progress: bool = True, save=None, lanes=None):
        from ..data.encode import Encoder

        self.model, self.tok, self.cfg, self.rows, self.res = model, tokenizer, cfg, rows, results
        self.lanes = lanes  # lanes.Lanes: batches side by side, generation alongside scoring (CPU)
        self.batch_size, self.retain, self.retrained, self.reference = batch_size, retain, retrained, reference
        self.variables, self.progress, self.save = variables or {}, progress, save or (lambda: None)
        self.m = cfg["metrics"]
        self._kl_of: dict[str, str] = {}  # dataset -> retained model whose next-token KL the token pass stored
        max_length = int(cfg.get("max_length", 256))
        self.max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if self.max_pos and self.max_pos < max_length:
            logger.info("eval: max_length %d capped at the model's %d positions", max_length, self.max_pos)
            max_length = self.max_pos
        self.enc = Encoder(tokenizer, cfg.get("prompt_template", "Question: {question}\nAnswer:"),
                           bool(cfg.get("chat_template", False)), max_length)
        from ..data.readers import row_hash

        for name, r in rows.items():
            items = self.res["per_item"].setdefault(name, [{"id": row_hash(x)} for x in r])
            if [x["id"] for x in items] != [row_hash(x) for x in r]:
                raise UserError(f"existing results for dataset {name} were computed on other rows; pass --overwrite")

    # -- bookkeeping
    def _done(self, key: str, spec) -> bool:
        g = self.res["groups"].get(key)
        if g and g.get("spec") == _spec_hash(spec):
            logger.info("eval: %s already computed, skipped", key)
            return True
        return False

    def _record(self, key: str, spec, seconds: float) -> None:
        self.res["groups"][key] = {"seconds": round(seconds, 3), "spec": _spec_hash(spec)}
        logger.info("eval: %s done in %.1fs", key, seconds)
        self.save()

    def _group(self, key: str, spec, fn) -> None:
        if not self._done(key, spec):
            t = time.perf_counter()
            fn()
            self._record(key, spec, time.perf_counter() - t)

    def _bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

    def _items(self, name):
        return self.res["per_item"][name]

    def _sum(self, **kv):
        self.res["summary"].update(kv)

    # -- groups
    def run(self) -> dict:
        m = self.m
        tr_sets = _as_list(m.get("truth_ratio", {}).get("forget")) + _as_list(m.get("truth_ratio", {}).get("retain"))
        mia_sets = [m["mia"]["members"], m["mia"]["nonmembers"]] if "mia" in m else []
        fq = [m["forget_quality"]["set"]] if "forget_quality" in m else []
        token_sets = list(dict.fromkeys(_as_list(m.get("token")) + tr_sets + mia_sets + fq))
        ks = tuple(float(k) for k in m.get("mia", {}).get("ks", (20, 40)))
        minkpp = bool(m.get("mia", {}).get("minkpp", True))
        scoring = []
        for s in token_sets:
            variants = s in tr_sets or s in fq
            spec = {"variants": variants, "mia": s in mia_sets, "ks": ks, "minkpp": minkpp and s in mia_sets,
                    "correct": m.get("truth_ratio", {}).get("correct", "paraphrased_answer"), "enc": self._enc_spec()}
            scoring.append((f"token:{s}", spec, lambda s=s, spec=spec: self.token(s, spec)))
        if self.reference is not None:
            for s in mia_sets:
                scoring.append((f"reference:{s}", {"ref": self.reference[1], "enc": self._enc_spec()},
                                lambda s=s: self.reference_nll(s)))
        gen_cfg = {}
        for g in ("generation", "knowmem"):
            if g in m:
                for s in _as_list(m[g]["sets"]):
                    gen_cfg[s] = {**m[g], "sets": None}
        if "consistency" in m:
            for s in _as_list(m["consistency"]["sets"]):
                gen_cfg.setdefault(s, {**m.get("generation", {}), "sets": None})
        generating = [(f"generation:{s}", {**gc, "enc": self._enc_spec()}, s, gc) for s, gc in gen_cfg.items()]
        self._score_and_generate(scoring, generating)
        if "knowmem" in m:
            for s in _as_list(m["knowmem"]["sets"]):
                self._sum(**{f"knowmem_{s}": self.res["summary"][f"{s}_rougeL_f1"]})
        if "verbmem" in m:
            for s in _as_list(m["verbmem"]["sets"]):
                self._group(f"verbmem:{s}", {**m["verbmem"], "sets": None}, lambda s=s: self.verbmem(s, m["verbmem"]))
        for g in ("truth_ratio", "mia", "forget_quality", "model_utility"):  # arithmetic on stored items
            if g in m:
                t = time.perf_counter()
                getattr(self, g)()
                self.res["groups"][g] = {"seconds": round(time.perf_counter() - t, 3)}
        if "consistency" in m and self.retain is not None:
            self._group("consistency", {**m["consistency"], "retain": self.retain.get("models", {}).get("model"),
                                        "enc": self._enc_spec()}, self.consistency)
        if "text_ppl" in m:
            self.text_ppl()
        return self.res

    def _score_and_generate(self, scoring: list, generating: list) -> None:
        """The teacher-forced groups, then the generation groups. With lanes, generation runs in one
        lane while the scoring batches go through the others (and through that lane once generation
        is done); generations are applied to the results on this thread, after the scoring. What later
        groups import is imported alongside: on a background thread, or in the generation lane."""
        generating = [g for g in generating if not self._done(g[0], g[1])]
        if self.lanes is None or not generating:
            # the imports run on a background thread while the scoring runs (its work is in C,
            # outside the GIL; started during model loading they would only slow the loading down)
            mods = _later_imports(self.m)
            if mods:
                threading.Thread(target=_import_all, args=(mods,), daemon=True).start()
            for g in scoring:
                self._group(*g)
            for key, spec, s, gc in generating:
                self._group(key, spec, lambda s=s, gc=gc: self.generation(s, gc))
            return
        jobs = [self._gen_prepare(s, gc) for _, _, s, gc in generating]  # the tokenizer stays on this thread

        def generate_all():
            done = []
            for job in jobs:
                t = time.perf_counter()
                done.append((self._gen_compute(job), time.perf_counter() - t))
            _import_all(_later_imports(self.m))  # in this lane, not on a third thread
            return done

        pending = self.lanes.submit(generate_all)
        for g in scoring:  # on a failure or Ctrl-C, closing the lanes stops generation before its next batch
            self._group(*g)
        results = pending.result()
        for (key, spec, s, _), (got, seconds) in zip(generating, results):
            self._gen_finish(s, got)
            self._record(key, spec, seconds)

    def _enc_spec(self):
        return {"template": self.enc.template, "chat": self.enc.chat, "max_length": self.enc.max_length}

    def token(self, s: str, spec: dict) -> None:
        from .mia import zlib_score
        from .scoring import score_sequences
        from .tofu import normalised_probability, truth_ratio

        rows, items = self.rows[s], self._items(s)
        seqs = self.enc.rows(rows)
        owner, full, pairs = [(i, "answer", None) for i in range(len(rows))], [True] * len(rows), []
        for i, r in enumerate(rows):
            if spec["variants"] and "question" in r and r.get("perturbed_answer"):
                if spec["correct"] == "paraphrased_answer" and r.get("paraphrased_answer"):
                    pairs.append((r["question"], r["paraphrased_answer"]))
                    owner.append((i, "paraphrased", None))
                for j, p in enumerate(_as_list(r["perturbed_answer"])):
                    pairs.append((r["question"], p))
                    owner.append((i, "perturbed", j))
        seqs += self.enc.qa_many(pairs)
        full += [False] * len(pairs)
        other = self._consistency_model(s)  # the retrained model runs here on the answers, not in a pass of its own
        with self._bar(len(seqs), f"score {s}") as bar:
            scored = score_sequences(self.model, seqs, self.tok.pad_token_id, self.batch_size, spec["ks"],
                                     spec["minkpp"], full, bar, other=other, lanes=self.lanes,
                                     other_rows=[k for k, f in enumerate(full) if f])
        if self.enc.truncated:
            logger.warning("eval: %d sequences of %s were cut at max_length=%d", self.enc.truncated, s,
                           self.enc.max_length)
            self.enc.truncated = 0
        for it in items:
            it.pop("nll_perturbed", None)
        for (i, kind, j), sc in zip(owner, scored):
            it = items[i]
            if kind == "answer":
                it.pop("kl_retain", None)
                if "kl_other" in sc:
                    sc["kl_retain"] = sc.pop("kl_other")
                it.update(sc)
                text = rows[i].get("answer", rows[i].get("text", ""))
                it["zlib"] = zlib_score(sc["nll"], text)
            elif kind == "paraphrased":
                it["nll_paraphrased"] = sc["nll"]
            else:
                it.setdefault("nll_perturbed", []).append(sc["nll"])
        for it in items:
            if "nll_perturbed" in it:
                correct = it.get("nll_paraphrased", it["nll"])
                it["truth_ratio"] = truth_ratio(correct, it["nll_perturbed"])
                it["probability_normalised"] = normalised_probability(it["nll"], it["nll_perturbed"])
        self._sum(**{f"{s}_{k}": v for k, v in token_summary(items).items()})
        if other is not None:
            self._kl_of[s] = self._retained_id()

    def _retained_id(self):
        return (self.retain or {}).get("models", {}).get("model", {}).get("hash")

    def _same_tokenizer(self) -> bool:
        """The retrained model reads the same token ids (next-token KL compares them position by position)."""
        other_tok = self.retrained[1]
        return len(other_tok) == len(self.tok) and other_tok.get_vocab() == self.tok.get_vocab()

    def _consistency_model(self, s: str):
        """The retrained model when dataset `s` gets next-token KL and both tokenizers match."""
        if self.retrained is None or s not in _as_list(self.m.get("consistency", {}).get("sets")):
            return None
        return self.retrained[0] if self._same_tokenizer() else None

    def reference_nll(self, s: str) -> None:
        from ..data.encode import Encoder
        from .scoring import score_sequences

        ref_model, _, ref_tok = self.reference[0], self.reference[1], self.reference[2]
        enc = Encoder(ref_tok, self.enc.template, self.enc.chat, self.enc.max_length)
        seqs = enc.rows(self.rows[s])
        with self._bar(len(seqs), f"reference {s}") as bar:
            sc = score_sequences(ref_model, seqs, ref_tok.pad_token_id, self.batch_size,
                                 full=[False] * len(seqs), progress=bar, lanes=self.lanes)
        for it, x in zip(self._items(s), sc):
            it["nll_reference"] = x["nll"]

    def _prompts(self, rows):
        return self.enc.prompt_ids_many([r["question"] for r in rows])

    def generation(self, s: str, gc: dict) -> None:
        self._gen_finish(s, self._gen_compute(self._gen_prepare(s, gc)))

    def _gen_prepare(self, s: str, gc: dict) -> dict:
        """Token ids and per-item caps of a generation group (uses the tokenizer's encoder)."""
        rows = self.rows[s]
        if any("question" not in r for r in rows):
            raise UserError(f"generation on dataset {s} needs question/answer rows")
        cap = int(gc.get("max_new_tokens", 200))
        fit = gc.get("fit_to_answer", True)
        refs = self.tok([" " + r["answer"].strip() for r in rows], add_special_tokens=False)["input_ids"]
        caps = [min(cap, math.ceil(1.5 * len(ids)) + 8) if fit else cap for ids in refs]
        prompts = self._prompts(rows)
        if self.max_pos:  # never run past the model's positions
            caps = [max(1, min(c, self.max_pos - len(p))) for c, p in zip(caps, prompts)]
        return {"set": s, "prompts": prompts, "caps": caps, "batch": self._gen_batch(gc), "stop": gc.get("stop", ()),
                "answers": [r["answer"] for r in rows]}

    def _gen_compute(self, job: dict) -> list[tuple[float, float, str]]:
        """(ROUGE-L recall, ROUGE-L F1, text hash) per item: greedy generation and scoring, which
        only decode with the tokenizer (safe beside the scoring lanes)."""
        from .generation import greedy, make_scorer, rouge_l, text_hash

        with self._bar(len(job["prompts"]), f"generate {job['set']}") as bar:
            texts = greedy(self.model, self.tok, job["prompts"], job["caps"], job["batch"], job["stop"], bar,
                           stopping=self.lanes.stopping if self.lanes else None)
        scorer = make_scorer()
        return [(*rouge_l(t, a, scorer), text_hash(t)) for t, a in zip(texts, job["answers"])]

    def _gen_finish(self, s: str, got: list[tuple[float, float, str]]) -> None:
        for it, (recall, f1, h) in zip(self._items(s), got):
            it["rougeL_recall"], it["rougeL_f1"], it["generation_hash"] = recall, f1, h
        n = len(got)
        self._sum(**{f"{s}_rougeL_recall": sum(x["rougeL_recall"] for x in self._items(s)) / n,
                     f"{s}_rougeL_f1": sum(x["rougeL_f1"] for x in self._items(s)) / n})

    def _gen_batch(self, gc: dict) -> int:
        """Rows generated together: the group's `batch_size`, else twice the scoring batch (a
        generating row holds a KV cache, not a sequence of vocabulary logits, and leaves the
        batch when done, so larger batches only save per-step overhead)."""
        return int(gc.get("batch_size") or 2 * self.batch_size)

    def verbmem(self, s: str, vc: dict) -> None:
        """Continuation of a prefix: QA rows (prompt = question text, reference = answer) or text
        rows (prompt = first `prefix_tokens` tokens, reference = the next `max_new_tokens`)."""
        from .generation import greedy, make_scorer, rouge_l

        k, cap = int(vc.get("prefix_tokens", 128)), int(vc.get("max_new_tokens", 128))
        prompts, refs = [], []
        rows = self.rows[s]
        encoded = self.tok([r["question"] if "question" in r else r["text"] for r in rows])["input_ids"]
        for r, ids in zip(rows, encoded):
            ids = list(ids)
            if "question" in r:
                prompts.append(ids)
                refs.append(r["answer"])
            else:
                if len(ids) <= k:
                    raise UserError(f"verbmem dataset {s}: a text has {len(ids)} tokens, not more than the "
                                    f"{k}-token prefix")
                prompts.append(ids[:k])
                refs.append(self.tok.decode(ids[k:k + cap], skip_special_tokens=True))
        caps = [max(1, min(cap, self.max_pos - len(p))) if self.max_pos else cap for p in prompts]
        with self._bar(len(prompts), f"verbmem {s}") as bar:
            texts = greedy(self.model, self.tok, prompts, caps, self._gen_batch(vc), (), bar)
        scorer = make_scorer()
        for it, t, ref in zip(self._items(s), texts, refs):
            it["verbmem_rougeL_f1"] = rouge_l(t, ref, scorer)[1]
        self._sum(**{f"verbmem_{s}": sum(x["verbmem_rougeL_f1"] for x in self._items(s)) / len(refs)})

    def truth_ratio(self) -> None:
        from .tofu import forget_truth_ratio, retain_truth_ratio

        tr = self.m["truth_ratio"]
        for role, agg in (("forget", forget_truth_ratio), ("retain", retain_truth_ratio)):
            for s in _as_list(tr.get(role)):
                trs = [x["truth_ratio"] for x in self._items(s) if "truth_ratio" in x]
                if len(trs) != len(self._items(s)):
                    raise UserError(f"truth ratio on dataset {s} needs perturbed_answer on every row")
                self._sum(**{f"{s}_truth_ratio": agg(trs)})

    def mia(self) -> None:
        from .mia import mia_summary, privleak

        c = self.m["mia"]
        aucs = mia_summary(self._items(c["members"]), self._items(c["nonmembers"]))
        head = c.get("headline", "loss")
        retain_aucs = (self.retain or {}).get("summary", {})
        out = {}
        for a, v in aucs.items():
            out[f"mia_auc_{a}"] = v
            ra = retain_aucs.get(f"mia_auc_{a}", 0.5) if self.retain is not None else 0.5
            out[f"privleak_{a}"] = privleak(v, ra)
        out["mia_auc"] = aucs[head]
        out["privleak"] = out[f"privleak_{head}"]
        out["privleak_baseline_auc"] = (retain_aucs.get(f"mia_auc_{head}", 0.5) if self.retain is not None else 0.5)
        self._sum(**out)

    def forget_quality(self) -> None:
        from .tofu import forget_quality

        s = self.m["forget_quality"]["set"]
        if self.retain is None:
            logger.info("eval: forget_quality needs a retain model (or its results); skipped")
            return
        theirs = self.retain.get("per_item", {}).get(s)
        if not theirs or any("truth_ratio" not in x for x in theirs):
            raise UserError(f"the retain model's results have no truth ratios on dataset {s}")
        if [x["id"] for x in theirs] != [x["id"] for x in self._items(s)]:
            raise UserError(f"the retain model's results were computed on other rows of dataset {s}")
        self._sum(forget_quality=forget_quality([x["truth_ratio"] for x in self._items(s)],
                                                [x["truth_ratio"] for x in theirs]))

    def model_utility(self) -> None:
        from .tofu import harmonic_mean

        keys = _as_list(self.m["model_utility"])
        missing = [k for k in keys if k not in self.res["summary"]]
        if missing:
            logger.warning("eval: model_utility needs %s; skipped", ", ".join(missing))
            return
        self._sum(model_utility=harmonic_mean([self.res["summary"][k] for k in keys]),
                  model_utility_components=keys)

    def consistency(self) -> None:
        from .consistency import agreement, next_token_kl, param_distance

        sets = _as_list(self.m["consistency"]["sets"])
        out = {}
        for s in sets:
            mine = [x.get("generation_hash") for x in self._items(s)]
            theirs = [x.get("generation_hash") for x in self.retain.get("per_item", {}).get(s, [])]
            if len(theirs) == len(mine) and None not in theirs:
                out[f"agreement_{s}"] = agreement(mine, theirs)
        if self.retrained is not None:
            other = self.retrained[0]
            if not self._same_tokenizer():
                logger.warning("eval: retain model has another tokenizer; next-token KL skipped")
            else:
                for s in sets:
                    if self._retained_id() is None or self._kl_of.get(s) != self._retained_id():
                        seqs = self.enc.rows(self.rows[s])
                        kl = next_token_kl(self.model, other, seqs, self.tok.pad_token_id, self.batch_size)
                        for it, v in zip(self._items(s), kl):
                            it["kl_retain"] = v
                    kl = [it["kl_retain"] for it in self._items(s)]
                    out[f"kl_{s}"] = sum(kl) / len(kl)
            d = param_distance(self.model, other)
            if d is not None:
                out["param_distance"] = d
        self._sum(**out)

    def text_ppl(self) -> None:
        from .text_ppl import perplexity, sliding_window_nll

        c = self.m["text_ppl"]
        path = _subst(str(c["data"]), {**{"text_file": ""}, **self.variables}, self.cfg["name"])
        if not path:
            logger.info("eval: text_ppl has no text file (pass --var text_file=PATH); skipped")
            return
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(f"text file {path} does not exist")
        window = int(c.get("window", 512))
        maxpos = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        window = min(window, maxpos) if maxpos else window
        stride = min(int(c.get("stride", window // 2)), window)

        def go():
            ids = list(self.tok(p.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"])
            if c.get("max_tokens"):
                ids = ids[: int(c["max_tokens"])]
            nll, n = sliding_window_nll(self.model, ids, window, stride)
            self._sum(text_perplexity=perplexity(nll, n), text_tokens=n)

        self._group("text_ppl", {**c, "data": str(p), "window": window, "stride": stride}, go)


def token_summary(items: list[dict]) -> dict:
    """Set-level token metrics: perplexity = exp(Σ NLL / Σ tokens) (token-weighted; lower = better
    known), probability = mean over items of exp(−mean NLL) (higher = better known), exact
    memorization and extraction strength = item means (higher = more memorised)."""
    n = len(items)
    tok = sum(x["n_tokens"] for x in items)
    out = {"perplexity": math.exp(sum(x["nll_sum"] for x in items) / tok),
           "probability": sum(math.exp(-x["nll"]) for x in items) / n,
           "exact_memorization": sum(x["exact_memorization"] for x in items) / n,
           "extraction_strength": sum(x["extraction_strength"] for x in items) / n,
           "n": n}
    if all("probability_normalised" in x for x in items):
        out["probability_normalised"] = sum(x["probability_normalised"] for x in items) / n
    return out


# ------------------------------------------------------------------------------------------ API

def environment(model=None) -> dict:
    import torch
    import transformers

    from .. import __version__

    env = {"llm_forget": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "machine": platform.machine(),
           "cpu_threads": torch.get_num_threads(), "world_size": 1}
    try:
        import rouge_score  # noqa: F401
        from importlib.metadata import version

        env["rouge_score"] = version("rouge-score")
        env["scipy"] = version("scipy")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        pass
    if model is not None:
        p = next(model.parameters())
        env.update(device=str(p.device), dtype=str(p.dtype).replace("torch.", ""))
    return env


def _identity(path: str) -> dict:
    from ..models import model_hash

    return {"path": str(Path(path).resolve()), "hash": model_hash(path)}


def _load(path: str, dtype: str, device: str | None):
    from ..models import load_model, load_tokenizer

    return load_model(path, dtype, device=device), load_tokenizer(path)


def _read_results(path: str | Path) -> dict | None:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file() or p.suffix != ".json":
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"results file {p} is not valid JSON: {e.msg}") from e


def _retain_suite(cfg: dict) -> dict:
    """The part of a suite a retain model must run: forget truth ratios, MIA AUCs, generations of
    the consistency sets. Model utility, consistency etc. are not needed from it."""
    m = cfg["metrics"]
    keep = {}
    if "mia" in m:
        keep["mia"] = m["mia"]
    if "forget_quality" in m:
        keep["forget_quality"] = m["forget_quality"]
        keep["truth_ratio"] = {"forget": [m["forget_quality"]["set"]],
                               "correct": m.get("truth_ratio", {}).get("correct", "paraphrased_answer")}
    if "consistency" in m:
        keep["generation"] = {**m.get("generation", {}), "sets": _as_list(m["consistency"]["sets"])}
    r = {**cfg, "metrics": keep}
    r.pop("_source", None)
    return r


def _later_imports(m: dict) -> list[str]:
    """Modules that later metric groups import: rouge-score (it pulls in nltk, ≈ 1.5 s) and
    scipy.stats (≈ 0.7 s)."""
    return (["rouge_score.rouge_scorer"] if {"generation", "knowmem", "verbmem"} & set(m) else []) + \
        (["scipy.stats"] if "forget_quality" in m else [])


def _import_all(mods: list[str]) -> None:
    import importlib

    for x in mods:
        importlib.import_module(x)


def evaluate(model, suite="quick", *, retain_model=None, reference_model=None, output=None, overwrite: bool = False,
             batch_size: int = 32, data_dir=None, variables: dict | None = None, limit: int | None = None,
             dtype: str = "auto", device: str | None = None, seed: int = 0, progress: bool = True,
             chat_template: bool | None = None, lanes: int | None = None) -> dict:
    """Evaluate a model (folder or zoo name) on a suite (shipped name, YAML path or dict).

    retain_model: the model trained without the forget set: a model folder/zoo name (evaluated on
        the needed parts of the suite, into OUTPUT/retain/ when `output` is set), or a results.json
        (or a folder holding one) from an earlier `evaluate` of it. Gives forget quality, PrivLeak
        relative to it, and consistency (KL, greedy agreement, parameter distance).
    reference_model: a model for the reference membership attack.
    output: folder for results.json; an existing one is resumed (computed groups skipped) unless
        `overwrite`. data_dir / variables: values for {data_dir} / {name} in the suite's data specs.
    limit: use only the first `limit` rows of every dataset (quick looks, timing samples).
    chat_template: override the suite's choice of wrapping questions in the tokenizer's chat template.
    lanes: on CPU, batches that run side by side, each with an equal share of torch's threads
        (default 1: one batch at a time with all of them; lanes share one model, see
        evaluation/lanes.py). The numbers do not depend on it.
    Returns the results dict (summary, per_item, groups with wall seconds, models, environment).
    """
    import torch

    from .. import io
    from ..models import resolve_model_path

    cfg = load_suite(suite)
    if chat_template is not None:
        cfg["chat_template"] = bool(chat_template)
    variables = {**(cfg.get("variables") or {}), **(variables or {})}
    if data_dir is not None:
        if not Path(data_dir).expanduser().is_dir():
            raise UserError(f"data dir {data_dir} does not exist")
        variables["data_dir"] = str(Path(data_dir).expanduser())
    rows = resolve_datasets(cfg, variables, limit)
    path = resolve_model_path(str(model))
    ident = _identity(path)
    spec = {k: v for k, v in cfg.items() if k != "_source"}
    out = Path(output) if output else None
    res = None
    if out is not None:
        if out.exists() and not out.is_dir():
            raise UserError(f"output {out} is a file; give a folder")
        old = _read_results(out)
        if old is not None and not overwrite:
            if old.get("models", {}).get("model", {}).get("hash") != ident["hash"]:
                raise UserError(f"{out / 'results.json'} holds results of another model; pass --overwrite "
                                "or choose another output folder")
            if old.get("suite", {}).get("name") != cfg["name"]:
                raise UserError(f"{out / 'results.json'} holds results of suite "
                                f"{old.get('suite', {}).get('name')!r}; pass --overwrite or another folder")
            res = old
    t0 = time.perf_counter()
    torch.manual_seed(seed)

    # retain model: results read from disk or computed now
    retain, retrained = None, None
    if retain_model is not None:
        retain = _read_results(retain_model)
        rpath = None
        if retain is None:
            rpath = resolve_model_path(str(retain_model))
            sub = _retain_suite(cfg)
            if sub["metrics"]:
                logger.info("eval: evaluating the retain model %s", rpath)
                retain = evaluate(rpath, sub, output=out / "retain" if out else None, overwrite=overwrite,
                                  batch_size=batch_size, variables=variables, limit=limit, dtype=dtype,
                                  device=device, seed=seed, progress=progress, lanes=lanes)
            else:
                retain = {"summary": {}, "per_item": {}, "models": {"model": _identity(rpath)}}
        else:
            p = retain.get("models", {}).get("model", {}).get("path")
            rpath = p if p and Path(p, "config.json").exists() else None
        if "consistency" in cfg["metrics"] and rpath is not None:
            retrained = _load(rpath, dtype, device)
    reference = None
    if reference_model is not None:
        rp = resolve_model_path(str(reference_model))
        m, t = _load(rp, dtype, device)
        reference = (m, _identity(rp)["hash"], t)

    mdl, tok = _load(path, dtype, device)
    if res is None:
        res = {"suite": {"name": cfg["name"], "source": cfg.get("_source"), "config": spec},
               "summary": {}, "per_item": {}, "groups": {}}
    res["suite"]["config"] = spec
    res["models"] = {"model": ident,
                     "retain": (retain or {}).get("models", {}).get("model") if retain_model is not None else None,
                     "reference": _identity(resolve_model_path(str(reference_model))) if reference_model else None}
    res["variables"] = variables
    res["environment"] = {**environment(mdl), "seed": seed, "batch_size": batch_size}

    last = time.perf_counter()

    def save(force: bool = False):
        """Results are written at the end and, for resuming, whenever 10 s of work are unsaved."""
        nonlocal last
        if out is not None and (force or time.perf_counter() - last > 10):
            io.write_json(out / "results.json", res)
            last = time.perf_counter()

    from .lanes import auto_lanes

    lane_pool = auto_lanes(mdl, lanes)
    res["environment"]["lanes"] = lane_pool.n if lane_pool else 1
    ev = Evaluator(mdl, tok, cfg, rows, res, batch_size=batch_size, retain=retain, retrained=retrained,
                   reference=reference, variables=variables, progress=progress, save=save, lanes=lane_pool)
    try:
        ev.run()
    finally:
        if lane_pool is not None:
            lane_pool.close()
    res["wall_seconds"] = round(time.perf_counter() - t0, 3)
    save(force=True)
    return res
