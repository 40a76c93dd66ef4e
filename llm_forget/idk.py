"""IdkPO through trl's DPOTrainer: the refusal is `chosen`, the forget answer `rejected`.

trl owns the DPO loss, the reference model (a frozen copy, or the adapter disabled under
peft) and the tokenisation of prompt/completion pairs; we build the preference data and add the
retain term of IdkDPO (Maini et al. 2024): L = γ·L_DPO + α·NLL(retain), the retain batch of each
step drawn from the seeded retain stream (trainer.retain_draw) at a position fixed by (step, rank).
"""

from __future__ import annotations

import dataclasses

from transformers import TrainingArguments

from .data.readers import read_rows


def load_refusals(spec: str) -> list[str]:
    """Refusal answers: a data spec with `text` or `answer` fields, or a file of plain lines
    (TOFU's idontknow.jsonl is plain lines despite its name)."""
    import json
    from pathlib import Path

    p = Path(spec)
    if p.is_file():
        lines = [x.strip() for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
        try:
            json.loads(lines[0])
        except (json.JSONDecodeError, IndexError):
            if lines:
                return lines
    return [r.get("text") or r.get("answer") for r in read_rows(spec)]


def preference_rows(forget_rows: list[dict], refusals: list[str], encoder) -> list[dict]:
    """One preference pair per forget row; refusals are assigned round-robin."""
    out = []
    for i, r in enumerate(forget_rows):
        idk = refusals[i % len(refusals)]
        out.append({"prompt": encoder.prompt_text(r["question"]), "chosen": " " + idk.strip(),
                    "rejected": " " + r["answer"].strip()})
    return out


def idk_trainer_class():
    """trl's DPOTrainer with IdkDPO's retain NLL term added to its loss."""
    from trl import DPOTrainer

    from .data.encode import pad
    from .methods.base import nll
    from .trainer import retain_draw

    class IdkDPOTrainer(DPOTrainer):
        def __init__(self, *args, retain=None, pad_id=0, gamma=1.0, alpha=1.0, retain_per_forget=1, **kw):
            super().__init__(*args, **kw)
            self.retain, self.pad_id, self.gamma, self.alpha = retain, pad_id, gamma, alpha
            self.retain_per_forget = retain_per_forget
            self._micro = (-1, 0)  # (global step, micro-batch within it) of the last retain batch
            self.retain_seen: set[int] = set()

        def retain_indices(self, n: int) -> list[int]:
            """Rows of this micro-batch: a pure function of (seed, step, micro-batch, rank), so ranks draw
            disjoint rows and a resumed run draws what the uninterrupted one would have."""
            step = self.state.global_step
            micro = self._micro[1] + 1 if self._micro[0] == step else 0
            self._micro = (step, micro)
            a = self.args
            start = ((step * a.gradient_accumulation_steps + micro) * a.world_size + a.process_index) * n
            return [retain_draw(a.seed, start + k, len(self.retain)) for k in range(n)]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if not self.retain or not self.alpha or not model.training:
                return out
            loss, extra = out if return_outputs else (out, None)
            idx = self.retain_indices(self.args.per_device_train_batch_size * self.retain_per_forget)
            self.retain_seen.update(idx)
            device = next(model.parameters()).device
            b = {k: v.to(device) for k, v in pad([self.retain[j] for j in idx], self.pad_id).items()}
            r = nll(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])
            self._metrics["train"]["retain_nll"].append(float(r.detach()))
            loss = self.gamma * loss + self.alpha * r
            return (loss, extra) if return_outputs else loss

    return IdkDPOTrainer


def build_dpo_trainer(cfg, method, model, tokenizer, encoder, forget_rows, peft_config=None, retain_enc=None):
    from datasets import Dataset
    from trl import DPOConfig

    if any("question" not in r for r in forget_rows):
        from .errors import UserError

        raise UserError("idk_po needs question/answer rows in the forget set")
    refusals = load_refusals(method.idk)
    data = Dataset.from_list(preference_rows(forget_rows, refusals, encoder))
    base = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    base["remove_unused_columns"] = True
    args = DPOConfig(**base, beta=method.beta, max_length=cfg.max_length)
    return idk_trainer_class()(model=model, ref_model=None, args=args, train_dataset=data, processing_class=tokenizer,
                               peft_config=peft_config, retain=retain_enc, pad_id=tokenizer.pad_token_id,
                               gamma=method.gamma, alpha=method.alpha, retain_per_forget=cfg.retain_per_forget)
