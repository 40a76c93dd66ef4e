from dataclasses import dataclass

from .base import Method, nll, register, retain_term, sequence_logp
from .npo import npo_loss


@register("kl")
@dataclass
class KLRegularised(Method):
    """L = γ·L_forget + α·KL(π_ref ‖ π_θ) on retain answer tokens, with L_forget = −NLL(forget)
    (forget_loss "ga") or the NPO loss (forget_loss "npo")."""

    forget_loss: str = "ga"
    beta: float = 0.1
    gamma: float = 1.0
    alpha: float = 1.0
    citation = "Maini et al., TOFU: A Task of Fictitious Unlearning for LLMs, 2024"

    def reference_needs(self):
        return {"retain_logits"} | ({"forget_logps"} if self.forget_loss == "npo" else set())

    def loss(self, b):
        if self.forget_loss == "ga":
            f = -nll(b.forget_logits, b.forget["labels"])
        elif self.forget_loss == "npo":
            f = npo_loss(sequence_logp(b.forget_logits, b.forget["labels"])[0], b.ref_forget_logps, self.beta)
        else:
            raise ValueError(f"forget_loss must be 'ga' or 'npo', not {self.forget_loss!r}")
        r = retain_term(b, "kl")
        return {"loss": self.gamma * f + self.alpha * r, "forget_loss": f, "retain_kl": r}
