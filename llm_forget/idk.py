"""IdkPO through trl's DPOTrainer: the refusal is `chosen`, the forget answer `rejected`.

trl owns the DPO loss, the reference model (a frozen copy, or the adapter disabled under
peft) and the tokenisation of prompt/completion pairs; we only build the preference data.
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


def build_dpo_trainer(cfg, method, model, tokenizer, encoder, forget_rows, peft_config=None):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    if any("question" not in r for r in forget_rows):
        from .errors import UserError

        raise UserError("idk_po needs question/answer rows in the forget set")
    refusals = load_refusals(method.idk)
    data = Dataset.from_list(preference_rows(forget_rows, refusals, encoder))
    base = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    base["remove_unused_columns"] = True
    args = DPOConfig(**base, beta=method.beta, max_length=cfg.max_length)
    return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data,
                      processing_class=tokenizer, peft_config=peft_config)
