from dataclasses import dataclass

import torch.nn.functional as F

from .base import Method, register, retain_term, sequence_logp


def npo_loss(logp, ref_logp, beta: float):
    """L = −(2/β)·E[log σ(−β·(log π_θ(y|x) − log π_ref(y|x)))], log-probs summed over answer tokens.

    Bounded below by 0 (unlike gradient ascent); tends to gradient ascent as β → 0.
    logp, ref_logp: (B,) summed answer log-probabilities under the model and the reference."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


@register("npo")
@dataclass
class NPO(Method):
    """Negative preference optimisation (Zhang et al. 2024) with a retain term."""

    beta: float = 0.1
    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"
    citation = "Zhang et al., Negative Preference Optimization, COLM 2024"

    def reference_needs(self):
        return {"forget_logps"} | ({"retain_logits"} if self.retain_loss == "kl" else set())

    def loss(self, b):
        logp, _ = sequence_logp(b.forget_logits, b.forget["labels"])
        f = npo_loss(logp, b.ref_forget_logps, self.beta)
        r = retain_term(b, self.retain_loss)
        return {"loss": self.gamma * f + self.alpha * r, "forget_loss": f, "retain_loss": r}
