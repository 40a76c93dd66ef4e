"""Turn rows into token ids with labels on answer tokens only, and pad them into batches.

Question/answer rows: the prompt (question in `template`, or the tokenizer's chat template
when `chat` is set) is labelled -100; the answer and a closing eos are the labels.
Raw-text rows: every token is a label. Padding is always labelled -100.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import UserError

logger = logging.getLogger(__name__)
IGNORE = -100
DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"


@dataclass
class Encoder:
    """Encodes rows for one tokenizer. `overlong`: "truncate" (cut the end, count it) or "error"."""

    tokenizer: object
    template: str = DEFAULT_TEMPLATE
    chat: bool = False
    max_length: int = 256
    overlong: str = "truncate"
    truncated: int = 0

    def prompt_text(self, question: str) -> str:
        if self.chat:
            if not getattr(self.tokenizer, "chat_template", None):
                raise UserError("chat_template is set but the tokenizer has no chat template")
            return self.tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                      tokenize=False, add_generation_prompt=True)
        return self.template.format(question=question)

    def prompt_ids(self, question: str) -> list[int]:
        return self.prompt_ids_many([question])[0]

    def prompt_ids_many(self, questions: list[str]) -> list[list[int]]:
        """Token ids of each question's prompt: one tokenizer call for the distinct questions."""
        distinct = list(dict.fromkeys(questions))
        ids = self._encode([self.prompt_text(q) for q in distinct], not self.chat)
        by_q = dict(zip(distinct, ids))
        return [list(by_q[q]) for q in questions]

    def qa(self, question: str, answer: str) -> dict:
        """input_ids and labels for one question/answer pair (answer tokens + eos labelled)."""
        return self.qa_many([(question, answer)])[0]

    def qa_many(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """qa() of many pairs, tokenized in two batched calls (the same ids as one by one)."""
        prompts = self.prompt_ids_many([q for q, _ in pairs])
        answers = self._encode([" " + a.strip() for _, a in pairs], False)
        eos = self.tokenizer.eos_token_id
        out = []
        for p, a in zip(prompts, answers):
            a = list(a) + ([eos] if eos is not None else [])
            out.append(self._fit(p + a, [IGNORE] * len(p) + a))
        return out

    def text(self, text: str) -> dict:
        return self.rows([{"text": text}])[0]

    def row(self, row: dict, answer_key: str = "answer") -> dict:
        return self.rows([row], answer_key)[0]

    def rows(self, rows: list[dict], answer_key: str = "answer") -> list[dict]:
        """row() of every row, in order: question/answer rows through qa_many, text rows in one call."""
        out: list[dict | None] = [None] * len(rows)
        qa = [i for i, r in enumerate(rows) if "question" in r]
        for i, x in zip(qa, self.qa_many([(rows[i]["question"], rows[i][answer_key]) for i in qa])):
            out[i] = x
        texts = [i for i, r in enumerate(rows) if "question" not in r]
        for i, ids in zip(texts, self._encode([rows[i]["text"] for i in texts], True)):
            out[i] = self._fit(list(ids), list(ids))
        return out

    def _encode(self, texts: list[str], special: bool) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=special)["input_ids"] if texts else []

    def _fit(self, ids: list[int], labels: list[int]) -> dict:
        if len(ids) > self.max_length:
            if self.overlong == "error":
                raise UserError(f"a sequence has {len(ids)} tokens, more than max_length={self.max_length}; "
                                "raise max_length or set overlong: truncate")
            self.truncated += 1
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        if labels.count(IGNORE) == len(labels):
            raise UserError(f"a prompt fills all of max_length={self.max_length} tokens, leaving no answer; "
                            "raise max_length")
        return {"input_ids": ids, "labels": labels}


def without_eos_labels(items: list[dict], eos_id: int | None) -> list[dict]:
    """The items with the eos that closes each answer left out of the loss (its label IGNORE)."""
    return [{**e, "labels": [IGNORE if y == eos_id else y for y in e["labels"]]} for e in items]


def pad(items: list[dict], pad_id: int, side: str = "right", length: int | None = None) -> dict:
    """Stack encoded items into input_ids / attention_mask / labels tensors: the one padding
    collator of the package (training, scoring, generation and editing all use it). Kept instead of
    transformers' `DataCollatorForSeq2Seq`, which gives the same tensors (right padding) but took
    4.3 ms against 3.0 ms for 64 items (benchmarks/bench_library_pieces.py) and reads the padding
    side from the tokenizer, an object shared by threads, instead of per call."""
    n = max(len(x["input_ids"]) for x in items)
    n = max(n, length or 0)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    labels = torch.full((len(items), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    for i, x in enumerate(items):
        k = len(x["input_ids"])
        sl = slice(n - k, n) if side == "left" else slice(0, k)
        ids[i, sl] = torch.tensor(x["input_ids"])
        labels[i, sl] = torch.tensor(x["labels"])
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
