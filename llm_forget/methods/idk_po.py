from dataclasses import dataclass

from .base import Method, register


@register("idk_po")
@dataclass
class IdkPO(Method):
    """Preference-based forgetting: a refusal ("I don't know…") is preferred over the forget
    answer. The loss is trl's DPO loss, L = −log σ(β·[(log π_θ(y_w|x) − log π_ref(y_w|x)) −
    (log π_θ(y_l|x) − log π_ref(y_l|x))]) with y_w the refusal and y_l the forget answer; the
    training runs through `trl.DPOTrainer` itself (see llm_forget/idk.py), not a copy of it.

    idk: data spec of refusal answers (each forget question gets one, chosen round-robin);
    TOFU's tofu/idontknow.jsonl works as is."""

    beta: float = 0.1
    idk: str = "builtin:refusals"
    citation = "Maini et al., TOFU, 2024; Rafailov et al., Direct Preference Optimization, NeurIPS 2023"
    trainer = "trl_dpo"
