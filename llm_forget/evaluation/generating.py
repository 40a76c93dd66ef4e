"""The generating metric groups of the evaluator: greedy answers scored by ROUGE-L (TOFU's recall,
MUSE's knowmem F1), and verbmem (continuations of a prefix)."""

from __future__ import annotations

import math

from ..errors import UserError


class GenerationGroups:
    """Generation groups of `evaluator.Evaluator` (which holds model, tok, enc, rows and results)."""

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

