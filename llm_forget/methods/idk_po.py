from dataclasses import dataclass

from .base import Method, register


@register("idk_po")
@dataclass
class IdkPO(Method):
    """Preference-based forgetting (IdkDPO): a refusal ("I don't know…") is preferred over the forget
    answer, and the retain answers are kept: L = γ·L_DPO + α·NLL(retain), with trl's DPO loss
    L_DPO = −log σ(β·[(log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))]),
    y_w the refusal and y_l the forget answer. The training runs through `trl.DPOTrainer` itself
    (llm_forget/idk.py adds the retain term), not a copy of it.

    idk: data spec of refusal answers (each forget question gets one, chosen round-robin);
    TOFU's tofu/idontknow.jsonl works as is."""

    beta: float = 0.1
    gamma: float = 1.0
    alpha: float = 1.0
    idk: str = "builtin:refusals"
    citation = "Maini et al., TOFU, 2024; Rafailov et al., Direct Preference Optimization, NeurIPS 2023"
    trainer = "trl_dpo"
