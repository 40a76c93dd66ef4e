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
        tok = self.tokenizer
        ids = tok(self.prompt_text(question), add_special_tokens=not self.chat)["input_ids"]
        return list(ids)

    def qa(self, question: str, answer: str) -> dict:
        """input_ids and labels for one question/answer pair (answer tokens + eos labelled)."""
        tok = self.tokenizer
        p = self.prompt_ids(question)
        a = list(tok(" " + answer.strip(), add_special_tokens=False)["input_ids"])
        if tok.eos_token_id is not None:
            a.append(tok.eos_token_id)
        return self._fit(p + a, [IGNORE] * len(p) + a)

    def text(self, text: str) -> dict:
        ids = list(self.tokenizer(text)["input_ids"])
        return self._fit(ids, list(ids))

    def row(self, row: dict, answer_key: str = "answer") -> dict:
        if "question" in row:
            return self.qa(row["question"], row[answer_key])
        return self.text(row["text"])

    def _fit(self, ids: list[int], labels: list[int]) -> dict:
        if len(ids) > self.max_length:
            if self.overlong == "error":
                raise UserError(f"a sequence has {len(ids)} tokens, more than max_length={self.max_length}; "
                                "raise max_length or set overlong: truncate")
            self.truncated += 1
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        if all(x == IGNORE for x in labels):
            raise UserError(f"a prompt fills all of max_length={self.max_length} tokens, leaving no answer; "
                            "raise max_length")
        return {"input_ids": ids, "labels": labels}


def pad(items: list[dict], pad_id: int, side: str = "right", length: int | None = None) -> dict:
    """Stack encoded items into input_ids / attention_mask / labels tensors."""
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
