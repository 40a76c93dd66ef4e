from dataclasses import dataclass

from .base import Method, nll, register


def gradient_ascent_loss(forget_nll):
    """L = −NLL(forget): maximise the forget answers' token-mean cross-entropy. Unbounded below,
    so it collapses a model if run too long; use a small learning rate and few steps."""
    return -forget_nll


@register("gradient_ascent")
@dataclass
class GradientAscent(Method):
    """Gradient ascent on the forget set, no retain term (Jang et al. 2023)."""

    citation = "Jang et al., Knowledge Unlearning for Mitigating Privacy Risks in Language Models, ACL 2023"

    def loss(self, b):
        f = gradient_ascent_loss(nll(b.forget_logits, b.forget["labels"]))
        return {"loss": f, "forget_loss": f}
