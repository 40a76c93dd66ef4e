from dataclasses import dataclass

import torch

from ..errors import UserError
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


def answer_norm(hidden, labels) -> torch.Tensor:
    """Mean L2 norm of the hidden states h_ℓ at the answer-token positions (labels ≠ −100, the
    positions the forget MSE steers), prompt and padding excluded. hidden: (B, T, H); labels: (B, T)."""
    return hidden.float().norm(dim=-1)[labels != -100].mean()


@register("rmu")
@dataclass
class RMU(Method):
    """Representation misdirection (Li et al. 2024): scramble layer ℓ's states on forget answers,
    pin them to the frozen model's on retain data; only the MLP output projections of
    `rmu_train_layers` are trained (located through the architecture table).

    rmu_layer: ℓ (default: a third of the way up the stack). rmu_train_layers: comma list
    (default ℓ−2..ℓ). steering_coeff: c; default 4× the starting model's mean hidden-state norm
    at ℓ over the answer tokens of the first forget rows (`calibrate`, before any update, broadcast
    from rank 0 so every rank steers to the same target; the paper's fixed c must be tuned per model).
    Under LoRA only the adapters of those projections are trained (the saved adapter holds the
    whole update); their base weights stay frozen."""

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
        lora = hasattr(model, "peft_config")
        for p in model.parameters():
            p.requires_grad_(False)
        for i in layers:
            params = [p for n, p in get_mlp_out(model, i).named_parameters() if not lora or "lora_" in n]
            if not params:
                raise UserError(f"RMU under LoRA trains the MLP output projection of layers {layers}, but layer {i}'s "
                                "has no LoRA adapter; add it to lora_target_modules (e.g. all-linear)")
            for p in params:
                p.requires_grad_(True)
        g = torch.Generator().manual_seed(self.seed)
        u = torch.rand(model.config.hidden_size, generator=g)
        self.direction = u / u.norm()

    @torch.no_grad()
    def calibrate(self, model, forget: dict) -> None:
        """c = 4 × mean ‖h_ℓ‖ over the answer tokens of `forget` (a padded batch of forget rows) under
        the model before any update; rank 0's value is broadcast, so all ranks share one target."""
        if self.steering_coeff is not None:
            return
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        out = model(input_ids=forget["input_ids"].to(device), attention_mask=forget["attention_mask"].to(device),
                    output_hidden_states=True)
        model.train(was)
        c = 4.0 * answer_norm(out.hidden_states[self.rmu_layer + 1], forget["labels"].to(device))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(c, src=0)
        self.steering_coeff = float(c)

    def loss(self, b):
        hf, hr = b.hidden(self.rmu_layer)
        hr_ref = b.ref_hidden(self.rmu_layer)[1]
        if self.steering_coeff is None:
            raise RuntimeError("rmu: calibrate() sets the steering coefficient before training")
        control = self.steering_coeff * self.direction.to(hf.device)
        fmask = b.forget["labels"] != -100
        rmask = b.retain["attention_mask"].bool()
        loss, lf, lr = rmu_loss(hf, fmask, control, hr, hr_ref, rmask, self.alpha)
        return {"loss": loss, "forget_mse": lf, "retain_mse": lr}
