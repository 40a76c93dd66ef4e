"""The evaluator: runs a suite's metric groups for one loaded model into a results dict.

Data flows one way: the rows (spec.resolve_datasets) go through teacher-forced scoring
(scoring.py) and greedy generation (generating.py) into per-item numbers; the set-level metrics
(groups.py) are arithmetic on those; `token_summary` and the groups write the summary.

Performance design: each set gets ONE teacher-forced scoring pass (`token:SET`) that covers the
answer, the paraphrased answer and every perturbed answer of every row; truth ratio, MIA, forget
quality and model utility are then arithmetic on stored per-item numbers; on the consistency
sets the retrained model runs on the same answer batches, so next-token KL costs no pass of the
evaluated model. Each generating metric generates once per set (`generation:SET`), with finished
rows leaving the batch; knowmem, ROUGE and greedy agreement reuse it.
"""

from __future__ import annotations

import logging
import threading
import time

from ..errors import UserError
from .generating import GenerationGroups
from .groups import SummaryGroups, token_summary
from .spec import as_list, import_all, later_imports, spec_hash

logger = logging.getLogger(__name__)


class Evaluator(GenerationGroups, SummaryGroups):
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
        if g and g.get("spec") == spec_hash(spec):
            logger.info("eval: %s already computed, skipped", key)
            return True
        return False

    def _record(self, key: str, spec, seconds: float) -> None:
        self.res["groups"][key] = {"seconds": round(seconds, 3), "spec": spec_hash(spec)}
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

    def _not_computed(self, key: str, reason: str) -> None:
        """Say in the results why a metric is absent (or null): results["not_computed"][key]."""
        self.res.setdefault("not_computed", {})[key] = reason
        logger.info("eval: %s not computed: %s", key, reason)

    # -- groups
    def run(self) -> dict:
        m = self.m
        tr_sets = as_list(m.get("truth_ratio", {}).get("forget")) + as_list(m.get("truth_ratio", {}).get("retain"))
        mia_sets = [m["mia"]["members"], m["mia"]["nonmembers"]] if "mia" in m else []
        fq = [m["forget_quality"]["set"]] if "forget_quality" in m else []
        token_sets = list(dict.fromkeys(as_list(m.get("token")) + tr_sets + mia_sets + fq))
        ks = tuple(float(k) for k in m.get("mia", {}).get("ks", (20, 40)))
        minkpp = bool(m.get("mia", {}).get("minkpp", True))
        scoring = []
        for s in token_sets:
            variants = s in tr_sets or s in fq
            spec = {"variants": variants, "mia": s in mia_sets, "ks": ks, "minkpp": minkpp and s in mia_sets,
                    "correct": m.get("truth_ratio", {}).get("correct", "paraphrased_answer"), "enc": self._enc_spec(),
                    "score_eos": bool(self.cfg.get("score_eos", False))}
            scoring.append((f"token:{s}", spec, lambda s=s, spec=spec: self.token(s, spec)))
        if self.reference is not None:
            for s in mia_sets:
                scoring.append((f"reference:{s}", {"ref": self.reference[1], "enc": self._enc_spec()},
                                lambda s=s: self.reference_nll(s)))
        gen_cfg = {}
        for g in ("generation", "knowmem"):
            if g in m:
                for s in as_list(m[g]["sets"]):
                    gen_cfg[s] = {**m[g], "sets": None}
        if "consistency" in m:
            for s in as_list(m["consistency"]["sets"]):
                gen_cfg.setdefault(s, {**m.get("generation", {}), "sets": None})
        generating = [(f"generation:{s}", {**gc, "enc": self._enc_spec()}, s, gc) for s, gc in gen_cfg.items()]
        self._score_and_generate(scoring, generating)
        if "knowmem" in m:
            for s in as_list(m["knowmem"]["sets"]):
                self._sum(**{f"knowmem_{s}": self.res["summary"][f"{s}_rougeL_f1"]})
        if "verbmem" in m:
            for s in as_list(m["verbmem"]["sets"]):
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
        if "scope" in m:
            self._group("scope", {**m["scope"], "enc": self._enc_spec()}, self.scope)
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
            mods = later_imports(self.m)
            if mods:
                threading.Thread(target=import_all, args=(mods,), daemon=True).start()
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
            import_all(later_imports(self.m))  # in this lane, not on a third thread
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
                for j, p in enumerate(as_list(r["perturbed_answer"])):
                    pairs.append((r["question"], p))
                    owner.append((i, "perturbed", j))
        seqs += self.enc.qa_many(pairs)
        full += [False] * len(pairs)
        other = self._consistency_model(s)  # the retrained model runs here on the answers, not in a pass of its own
        with self._bar(len(seqs), f"score {s}") as bar:
            scored = score_sequences(self.model, seqs, self.tok.pad_token_id, self.batch_size, spec["ks"],
                                     spec["minkpp"], full, bar, other=other, lanes=self.lanes,
                                     other_rows=[k for k, f in enumerate(full) if f],
                                     eos_id=None if spec.get("score_eos") else self.tok.eos_token_id)
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
        if self.retrained is None or s not in as_list(self.m.get("consistency", {}).get("sets")):
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

