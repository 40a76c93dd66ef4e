"""UnlearnTrainer: a `transformers.Trainer` whose batches pair forget rows with retain rows.

The trainer keeps only three things: the pairing of forget and retain data, the reference
model, and one `compute_loss` that hands a lazy `Batch` to the method. Forget and retain rows
go through the model in ONE forward pass (padded to a common length and concatenated), which
is faster and keeps DDP to one forward per backward.
"""

from __future__ import annotations

import copy
import logging
import math
import random

import torch
from transformers import Trainer, TrainerCallback

from .data.encode import pad
from .errors import UserError

logger = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def retain_draw(seed: int | str, position: int, n_retain: int) -> int:
    """The retain row at `position` of an endless stream of seeded permutations of range(n_retain):
    positions 0..n−1 visit every retain row once (permutation 0), n..2n−1 again (permutation 1)...
    A pure function of (seed, position), so every rank and a resumed run draw the same rows."""
    cycle, k = divmod(position, n_retain)
    perm = list(range(n_retain))
    random.Random(f"{seed}/{cycle}").shuffle(perm)
    return perm[k]


class UnlearnDataset(torch.utils.data.Dataset):
    """Item i = forget row i paired with `retain_per_forget` = k retain rows drawn afresh per epoch: in
    epoch e, item i takes positions (e·len(forget) + i)·k ... (e·len(forget) + i)·k + k − 1 of the retain
    stream (`retain_draw`), so successive epochs walk through all retain rows before any repeats (k = 1:
    one row, at position e·len(forget) + i). The Trainer sets the epoch (`set_epoch`,
    called by `EpochCallback` at the start of each epoch, also on resume). `alternatives` (set by a
    method that asks for them, e.g. row_target): per forget row, a list of (encoded row, starting NLL);
    item i then also carries one of row i's, drawn afresh per epoch the same way. `ranked` (retain_pairing
    similar, llm_forget/pairing.py): per forget row, retain indices most similar first; item i then takes
    ranked[i][(e·k + t) mod len(ranked[i])], t < k, in place of the stream."""

    def __init__(self, forget: list[dict], retain: list[dict] | None, seed: int = 0, retain_per_forget: int = 1,
                 ranked: list[list[int]] | None = None):
        if retain_per_forget < 1:
            raise UserError(f"retain_per_forget must be >= 1, got {retain_per_forget}")
        self.forget, self.retain, self.seed, self.k = forget, retain, seed, int(retain_per_forget)
        self.ranked = ranked
        self.epoch = 0
        self.alternatives: list[list[tuple[dict, float]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def retain_indices(self, i: int, epoch: int | None = None) -> list[int]:
        """The retain rows item i trains with in `epoch` (default: the current one)."""
        e = self.epoch if epoch is None else epoch
        if self.ranked and self.ranked[i]:
            return [self.ranked[i][(e * self.k + t) % len(self.ranked[i])] for t in range(self.k)]
        start = (e * len(self.forget) + i) * self.k
        return [retain_draw(self.seed, start + j, len(self.retain)) for j in range(self.k)]

    def retain_index(self, i: int, epoch: int | None = None) -> int:
        return self.retain_indices(i, epoch)[0]

    def __len__(self):
        return len(self.forget)

    def __getitem__(self, i):
        item = {"index": i, "forget": self.forget[i]}
        if self.retain:
            js = self.retain_indices(i)
            if self.k == 1:
                item["retain"], item["retain_index"] = self.retain[js[0]], js[0]
            else:
                item["retain"], item["retain_index"] = [self.retain[j] for j in js], js
        alts = self.alternatives[i] if self.alternatives else None
        if alts:
            item["alt"], item["alt_ref"] = alts[retain_draw(f"{self.seed}/alt/{i}", self.epoch, len(alts))]
        return item


class EpochCallback(TrainerCallback):
    """Tells the dataset which epoch starts (accelerate forwards `set_epoch` to a dataset only when
    its sampler has none). state.epoch is e + steps/steps_in_epoch, so its floor is the epoch about to run,
    also after resuming mid-epoch."""

    def __init__(self, dataset: UnlearnDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kw):
        self.dataset.set_epoch(math.floor(state.epoch + 1e-9) if state.epoch else 0)


def _listed(x) -> list:
    return x if isinstance(x, list) else [x]


class Collator:
    """Pads forget, retain and alternative parts to one common length (so they can share a forward pass)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict:
        n = len(items)
        # an item's "retain" is one row or, with retain_per_forget > 1, a list of rows (likewise "retain_index")
        retain = [r for x in items if "retain" in x for r in _listed(x["retain"])]
        alt = [x for x in items if "alt" in x]
        batch = pad([x["forget"] for x in items] + retain + [x["alt"] for x in alt], self.pad_id)
        out = {"index": torch.tensor([x["index"] for x in items]),
               "forget": {k: v[:n] for k, v in batch.items()}}
        if retain:
            out["retain"] = {k: v[n:n + len(retain)] for k, v in batch.items()}
            out["retain_index"] = torch.tensor([j for x in items if "retain_index" in x
                                                for j in _listed(x["retain_index"])])
        if alt:
            out["alt"] = {**{k: v[n + len(retain):] for k, v in batch.items()},
                          "ref_nll": torch.tensor([x["alt_ref"] for x in alt])}
        return out


class Reference:
    """The frozen reference policy π_ref.

    kind: "copy" (a frozen deep copy), "adapter" (the trained peft model with its adapter
    disabled: no second copy in memory), "cached" (only forget log-probs, computed up front),
    or "none". `forget_logps` holds cached summed answer log-probs indexed by dataset index."""

    def __init__(self, kind: str, model=None):
        self.kind = kind
        self.model = None
        self.forget_logps: torch.Tensor | None = None
        if kind == "copy":
            self.model = copy.deepcopy(model).eval()
            for p in self.model.parameters():
                p.requires_grad_(False)

    @torch.no_grad()
    def forward(self, trained_model, **inputs):
        if self.kind == "copy":
            return self.model(**inputs)
        if self.kind == "adapter":
            was_training = trained_model.training
            trained_model.eval()
            try:
                with trained_model.disable_adapter():
                    return trained_model(**inputs)
            finally:
                trained_model.train(was_training)
        raise RuntimeError(f"reference kind {self.kind!r} cannot run a forward pass")

    @torch.no_grad()
    def cache_forget_logps(self, model, dataset: UnlearnDataset, collate: Collator, batch_size: int = 16):
        """Summed answer log-probs of every forget row under `model` (before any update)."""
        from .methods.base import sequence_logp

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out = []
        for s in range(0, len(dataset.forget), batch_size):
            rows = [{"index": i, "forget": dataset.forget[i]} for i in range(s, min(s + batch_size, len(dataset.forget)))]
            f = {k: v.to(device) for k, v in collate(rows)["forget"].items()}
            logits = model(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).logits
            out.append(sequence_logp(logits, f["labels"])[0].cpu())
        model.train(was_training)
        logps = torch.cat(out)
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # make ranks bit-identical
            logps = logps.to(device)
            torch.distributed.broadcast(logps, src=0)
            logps = logps.cpu()
        self.forget_logps = logps


class Batch:
    """What a method may ask of one training batch; each forward pass runs at most once, on demand."""

    def __init__(self, model, inputs: dict, reference: Reference, unwrap=lambda m: m):
        self.model, self.reference, self.unwrap = model, reference, unwrap
        self.index = inputs["index"]
        self.forget = inputs["forget"]
        self.retain = inputs.get("retain")
        self.alt = inputs.get("alt")  # alternatives (row_target): after forget and retain in the one forward pass
        self._out = self._ref_out = None
        self._hidden = False

    def _inputs(self, alt: bool = True):
        """Input ids and mask of forget, retain and (for the trained model only) alternative rows, stacked."""
        parts = [p for p in (self.forget, self.retain, self.alt if alt else None) if p is not None]
        return torch.cat([p["input_ids"] for p in parts]), torch.cat([p["attention_mask"] for p in parts])

    def _run(self, hidden=False):
        if self._out is None:
            ids, mask = self._inputs()
            self._out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=hidden)
        return self._out

    def _ref(self, hidden=False):
        if self._ref_out is None:
            ids, mask = self._inputs(alt=False)  # no method asks the reference about alternatives
            self._ref_out = self.reference.forward(self.unwrap(self.model), input_ids=ids, attention_mask=mask,
                                                   output_hidden_states=hidden)
        return self._ref_out

    @property
    def _n(self):
        return self.forget["input_ids"].shape[0]

    @property
    def forget_logits(self):
        return self._run().logits[: self._n]

    @property
    def _m(self):  # end of the retain part
        return self._n + (0 if self.retain is None else self.retain["input_ids"].shape[0])

    @property
    def retain_logits(self):
        if self.retain is None:
            raise UserError("this method needs a retain set; set retain in the recipe")
        return self._run().logits[self._n:self._m]

    @property
    def alt_logits(self):
        return self._run().logits[self._m:]

    def hidden(self, layer: int):
        """(forget, retain) hidden states after block `layer`, from the trained model."""
        h = self._run(hidden=True).hidden_states[layer + 1]
        return h[: self._n], h[self._n:self._m]

    def ref_hidden(self, layer: int):
        h = self._ref(hidden=True).hidden_states[layer + 1]
        return h[: self._n], h[self._n:self._m]

    @property
    def ref_retain_logits(self):
        if self.retain is None:
            raise UserError("this method needs a retain set; set retain in the recipe")
        return self._ref().logits[self._n:self._m]

    @property
    def ref_forget_logps(self):
        from .methods.base import sequence_logp

        if self.reference.forget_logps is not None:
            return self.reference.forget_logps.to(self.index.device)[self.index]
        return sequence_logp(self._ref().logits[: self._n], self.forget["labels"])[0]


class UnlearnTrainer(Trainer):
    """Trainer with a method (llm_forget.methods) and a reference model."""

    def __init__(self, *args, method, reference: Reference, **kwargs):
        super().__init__(*args, **kwargs)
        self.method, self.reference = method, reference
        self._parts: dict[str, list[float]] = {}
        self.retain_seen: set[int] = set()  # distinct retain rows trained on by this process
        # compute_loss returns each micro-batch's own token means and ignores num_items_in_batch, so the
        # Trainer must divide it by the gradient accumulation steps itself (and count no items for it)
        self.model_accepts_loss_kwargs = False
        if isinstance(self.train_dataset, UnlearnDataset):
            self.add_callback(EpochCallback(self.train_dataset))
        if reference.model is not None:
            reference.model = self._prepare_reference(reference.model)

    def _prepare_reference(self, ref):
        """Place the frozen copy the way trl places a DPO reference model: sharded too under ZeRO-3
        and FSDP, otherwise moved to this process's device (never wrapped in DDP)."""
        if self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            return prepare_deepspeed(ref, self.accelerator)
        if self.is_fsdp_enabled:
            from trl.models.utils import prepare_fsdp

            return prepare_fsdp(ref, self.accelerator)
        return self.accelerator.prepare_model(ref, evaluation_mode=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "retain_index" in inputs:
            self.retain_seen.update(inputs["retain_index"].tolist())
        b = Batch(model, inputs, self.reference, unwrap=self.accelerator.unwrap_model)
        out = self.method.loss(b)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss.item()} at step {self.state.global_step + 1}; lower learning_rate "
                f"(now {self.args.learning_rate:g}) or raise the retain weight alpha"
            )
        for k, v in out.items():
            if k != "loss":
                self._parts.setdefault(k, []).append(float(v.detach()))
        return (loss, out) if return_outputs else loss

    def _get_grad_norm(self, model, grad_norm=None):
        """The Trainer's gradient norm (before clipping), checked before the optimizer step: a
        non-finite norm stops the run while the weights are still those of the last good step.
        `_get_grad_norm` is a private Trainer hook (transformers 5.x calls it once per optimizer step,
        with the norm clipping computed), the one the package overrides; the public
        `on_pre_optimizer_step` callback gets no norm, and computing one there costs a pass over every
        gradient (none under DeepSpeed). A transformers version that stops calling it fails
        tests/test_reliability.py::test_infinite_gradient_norm_stops_before_the_step."""
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if norm is not None and not math.isfinite(float(norm)):
            raise TrainingDiverged(
                f"gradient norm became {float(norm)} at step {self.state.global_step + 1}; lower learning_rate "
                f"(now {self.args.learning_rate:g}), keep max_grad_norm > 0 or use float32 weights"
            )
        return norm

    def log(self, logs: dict, *args, **kwargs):
        for k, vals in self._parts.items():
            logs[k] = round(sum(vals) / len(vals), 4)
        self._parts = {}
        super().log(logs, *args, **kwargs)
