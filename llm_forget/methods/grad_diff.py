from dataclasses import dataclass

from .base import Method, nll, register, retain_term


def grad_diff_loss(forget_nll, retain_loss, gamma: float = 1.0, alpha: float = 1.0):
    """L = γ·(−NLL(forget)) + α·L_retain, with L_retain the retain NLL (or KL to the reference)."""
    return -gamma * forget_nll + alpha * retain_loss


@register("grad_diff")
@dataclass
class GradDiff(Method):
    """Gradient difference: ascend on forget, descend on retain (Liu et al. 2022)."""

    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"
    citation = "Liu et al., Continual Learning and Private Unlearning, CoLLAs 2022"

    def reference_needs(self):
        return {"retain_logits"} if self.retain_loss == "kl" else set()

    def loss(self, b):
        f = nll(b.forget_logits, b.forget["labels"])
        r = retain_term(b, self.retain_loss)
        return {"loss": grad_diff_loss(f, r, self.gamma, self.alpha), "forget_nll": f, "retain_loss": r}
