from dataclasses import dataclass

import torch

from ..models import get_mlp_out, num_layers
from .base import Method, register


def rmu_loss(h_forget, forget_mask, control, h_retain, h_retain_frozen, retain_mask, alpha: float):
    """L = MSE(h_ℓ(x_f), c·u) + α·MSE(h_ℓ(x_r), h_ℓ^frozen(x_r)).

    MSE is the mean over the selected positions and the hidden dimension (as torch's mse_loss).
    h_*: (B, T, H) hidden states after block ℓ; masks: (B, T) bool positions to use;
    control: (H,) the steering target c·u, u a fixed random unit vector."""
    f = ((h_forget.float() - control) ** 2).mean(-1)
    r = ((h_retain.float() - h_retain_frozen.float()) ** 2).mean(-1)
    lf = (f * forget_mask).sum() / forget_mask.sum().clamp(min=1)
    lr = (r * retain_mask).sum() / retain_mask.sum().clamp(min=1)
    return lf + alpha * lr, lf, lr


@register("rmu")
@dataclass
class RMU(Method):
    """Representation misdirection (Li et al. 2024): scramble layer ℓ's states on forget answers,
    pin them to the frozen model's on retain data; only the MLP output projections of
    `rmu_train_layers` are trained (located through the architecture table).

    rmu_layer: ℓ (default: a third of the way up the stack). rmu_train_layers: comma list
    (default ℓ−2..ℓ). steering_coeff: c; default 4× the frozen model's mean hidden-state norm
    at ℓ on the first forget batch (the paper's fixed c must be tuned per model)."""

    rmu_layer: int | None = None
    rmu_train_layers: str | None = None
    steering_coeff: float | None = None
    alpha: float = 100.0
    seed: int = 0
    citation = "Li et al., The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning, ICML 2024"

    def reference_needs(self):
        return {"hidden"}

    def setup(self, model):
        n = num_layers(model)
        if self.rmu_layer is None:
            self.rmu_layer = max(n // 3, 1)
        if not 0 <= self.rmu_layer < n:
            raise ValueError(f"rmu layer must be in [0, {n - 1}], got {self.rmu_layer}")
        layers = ([int(x) for x in str(self.rmu_train_layers).split(",")] if self.rmu_train_layers
                  else list(range(max(self.rmu_layer - 2, 0), self.rmu_layer + 1)))
        self.trained = layers
        for p in model.parameters():
            p.requires_grad_(False)
        for i in layers:
            for p in get_mlp_out(model, i).parameters():
                p.requires_grad_(True)
        g = torch.Generator().manual_seed(self.seed)
        u = torch.rand(model.config.hidden_size, generator=g)
        self.direction = u / u.norm()

    def loss(self, b):
        hf, hr = b.hidden(self.rmu_layer)
        hr_ref = b.ref_hidden(self.rmu_layer)[1]
        if self.steering_coeff is None:
            self.steering_coeff = 4.0 * float(b.ref_hidden(self.rmu_layer)[0].float().norm(dim=-1).mean())
        control = self.steering_coeff * self.direction.to(hf.device)
        fmask = b.forget["labels"] != -100
        rmask = b.retain["attention_mask"].bool()
        loss, lf, lr = rmu_loss(hf, fmask, control, hr, hr_ref, rmask, self.alpha)
        return {"loss": loss, "forget_mse": lf, "retain_mse": lr}
