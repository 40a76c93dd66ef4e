"""What an edit returns: the edited model, the original weights of every changed module (so the
user can `restore()` them on request), and per-request diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class EditResult:
    model: object
    originals: dict = field(default_factory=dict)  # id(module) -> (module, original weight copy)
    log: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    per_batch: list | None = None  # lifelong table (`lifelong.StreamTable`), when measured

    def remember(self, module, conv1d: bool = False) -> None:
        """Keep a copy of `module.weight` the first time it is about to change."""
        if id(module) not in self.originals:
            self.originals[id(module)] = (module, module.weight.detach().clone())

    @torch.no_grad()
    def restore(self) -> None:
        """Put every changed weight back as it was before the edits."""
        for module, w in self.originals.values():
            module.weight.copy_(w)

    def weight_change(self) -> dict:
        """Frobenius norm of the change per edited module (by parameter name)."""
        names = {id(m): n for n, m in self.model.named_modules()}
        return {names.get(i, str(i)): float((m.weight.detach().float() - w.float()).norm())
                for i, (m, w) in self.originals.items()}
