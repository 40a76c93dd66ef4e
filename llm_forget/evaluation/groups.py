"""The set-level metric groups of the evaluator: arithmetic on stored per-item numbers (truth ratio,
MIA and privleak, forget quality, model utility, token summaries), consistency with a retrained
model, general-text perplexity and the scope group's answer accuracy per form."""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import UserError
from .spec import as_list, subst


class SummaryGroups:
    """Set-level groups of `evaluator.Evaluator` (which holds model, rows, results, retain)."""

    def truth_ratio(self) -> None:
        from .tofu import forget_truth_ratio, retain_truth_ratio

        tr = self.m["truth_ratio"]
        for role, agg in (("forget", forget_truth_ratio), ("retain", retain_truth_ratio)):
            for s in as_list(tr.get(role)):
                trs = [x["truth_ratio"] for x in self._items(s) if "truth_ratio" in x]
                if len(trs) != len(self._items(s)):
                    raise UserError(f"truth ratio on dataset {s} needs perturbed_answer on every row")
                self._sum(**{f"{s}_truth_ratio": agg(trs)})

    def mia(self) -> None:
        """MIA AUC per attack (members vs non-members) and privleak in MUSE's form (mia.privleak)
        relative to the retain model's AUC of the same attack (0.5 without a retain model). `mia_auc`
        is the `headline` attack's AUC (default loss); `privleak` uses the `privleak` attack (default
        mink_40, as open-unlearning's TOFU privleak), else the headline."""
        from .mia import mia_summary, privleak

        c = self.m["mia"]
        aucs = mia_summary(self._items(c["members"]), self._items(c["nonmembers"]))
        head = c.get("headline", "loss")
        pl = c.get("privleak") or ("mink_40" if "mink_40" in aucs else head)
        retain_aucs = (self.retain or {}).get("summary", {})
        out = {}
        for a, v in aucs.items():
            out[f"mia_auc_{a}"] = v
            ra = retain_aucs.get(f"mia_auc_{a}", 0.5) if self.retain is not None else 0.5
            out[f"privleak_{a}"] = privleak(v, ra)
            if out[f"privleak_{a}"] is None:
                self._not_computed(f"privleak_{a}", f"the retain model's {a} AUC is 1, privleak divides by 1 - AUC")
        out["mia_auc"] = aucs[head]
        out["privleak"] = out[f"privleak_{pl}"]
        out["privleak_attack"] = pl
        out["privleak_baseline_auc"] = (retain_aucs.get(f"mia_auc_{pl}", 0.5) if self.retain is not None else 0.5)
        if self.retain is None:
            self._not_computed("privleak_baseline", "no retain model: privleak is relative to AUC 0.5 (chance), "
                                                    "not to a model never trained on the members")
        self._sum(**out)

    def forget_quality(self) -> None:
        from .tofu import forget_quality

        s = self.m["forget_quality"]["set"]
        if self.retain is None:
            self._not_computed("forget_quality", "needs a retain model (--retain-model: trained without the forget "
                                                 "rows) or its results")
            return
        theirs = self.retain.get("per_item", {}).get(s)
        if not theirs or any("truth_ratio" not in x for x in theirs):
            raise UserError(f"the retain model's results have no truth ratios on dataset {s}")
        if [x["id"] for x in theirs] != [x["id"] for x in self._items(s)]:
            raise UserError(f"the retain model's results were computed on other rows of dataset {s}")
        self._sum(forget_quality=forget_quality([x["truth_ratio"] for x in self._items(s)],
                                                [x["truth_ratio"] for x in theirs]))
        if not all("nll" in x for x in theirs):  # results written before forget_nll_quality existed
            self._not_computed("forget_nll_quality", f"the retain model's results have no per-row NLLs on dataset {s}")
            return
        from .nll_spread import nll_spread_quality

        self._sum(forget_nll_quality=nll_spread_quality([x["nll"] for x in self._items(s)],
                                                        [x["nll"] for x in theirs]))

    def model_utility(self) -> None:
        from .tofu import harmonic_mean

        keys = as_list(self.m["model_utility"])
        missing = [k for k in keys if k not in self.res["summary"]]
        if missing:
            self._not_computed("model_utility", f"needs {', '.join(missing)}")
            return
        self._sum(model_utility=harmonic_mean([self.res["summary"][k] for k in keys]),
                  model_utility_components=keys)

    def consistency(self) -> None:
        from .consistency import agreement, next_token_kl, param_distance

        sets = as_list(self.m["consistency"]["sets"])
        out = {}
        for s in sets:
            mine = [x.get("generation_hash") for x in self._items(s)]
            theirs = [x.get("generation_hash") for x in self.retain.get("per_item", {}).get(s, [])]
            if len(theirs) == len(mine) and None not in theirs:
                out[f"agreement_{s}"] = agreement(mine, theirs)
        if self.retrained is not None:
            other = self.retrained[0]
            if not self._same_tokenizer():
                self._not_computed("kl", "the retain model has another tokenizer; next-token KL compares token ids")
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
        path = subst(str(c["data"]), {**{"text_file": ""}, **self.variables}, self.cfg["name"])
        if not path:
            self._not_computed("text_perplexity", "no text file (pass --var text_file=PATH)")
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

    def scope(self) -> None:
        """Answer accuracy per (split, form) of the scope rows (evaluation/scope.py):
        `scope_{split}_{form}_accuracy` in the summary, every group's numbers under results["scope"]."""
        from .scope import answer_scores, grouped

        rows = self.rows[self.m["scope"]["set"]]
        groups = grouped(rows, answer_scores(self.model, self.enc, rows, self.batch_size))
        self._sum(**{f"scope_{sp}_{f}_accuracy": g["accuracy"]
                     for sp, forms in groups.items() for f, g in forms.items()})
        self.res["scope"] = groups


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


