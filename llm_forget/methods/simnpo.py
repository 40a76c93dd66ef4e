from dataclasses import dataclass

import torch.nn.functional as F

from .base import Method, register, retain_term, sequence_logp


def simnpo_loss(logp, n_tokens, beta: float, delta: float = 0.0):
    """L = −(2/β)·E[log σ(β·(NLL_sum(y)/|y| − δ))] with NLL_sum = −Σ_t log π_θ(y_t): NPO made
    reference-free and length-normalised (Fan et al. 2024)."""
    return -(2.0 / beta) * F.logsigmoid(beta * (-logp / n_tokens.clamp(min=1) - delta)).mean()


@register("simnpo")
@dataclass
class SimNPO(Method):
    """SimNPO: no reference model; forget weight γ, retain NLL weight α."""

    beta: float = 4.5
    delta: float = 0.0
    gamma: float = 0.125
    alpha: float = 1.0
    retain_loss: str = "nll"
    citation = "Fan et al., Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning, 2024"

    def reference_needs(self):
        return {"retain_logits"} if self.retain_loss == "kl" else set()

    def loss(self, b):
        logp, n = sequence_logp(b.forget_logits, b.forget["labels"])
        f = simnpo_loss(logp, n, self.beta, self.delta)
        r = retain_term(b, self.retain_loss)
        return {"loss": self.gamma * f + self.alpha * r, "forget_loss": f, "retain_loss": r}
