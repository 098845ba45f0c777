"""What the 1cycle literature plots besides the loss: `onecycle train --activation-stats`.

- the mean absolute gradient over all parameters, every step (1cycle settles into a flat region,
  a constant LR keeps spiking);
- with `--activation-stats`, per layer and per step: the mean and std of the layer's output, the
  share near zero and a 40-bin histogram over 0..10, as fastai's `ActivationStats(with_hist=True)`
  (near zero = the first two bins, [0, 0.5), over the histogram's total).
Both stay on the device in preallocated buffers until the loop's periodic flush reads them.
"""

from __future__ import annotations

import torch
from torch import nn

HIST_BINS, HIST_MAX = 40, 10.0


def grad_abs_mean(params: list[torch.Tensor], numel: int) -> torch.Tensor:
    """Mean |gradient| over every parameter element, as one device scalar (no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    return torch.stack(torch._foreach_norm(grads, 1)).sum() / numel


class ActivationStats:
    """Forward hooks that write each layer's statistics into a device buffer, one row per step."""

    def __init__(self, layers: list[tuple[str, nn.Module]], capacity: int, device: torch.device):
        self.names = [name for name, _ in layers]
        self.buffer = torch.zeros(capacity, len(layers), 3 + HIST_BINS, device=device)
        self.steps: list[int] = []
        self.slot = 0
        self.active = True
        self.handles = [m.register_forward_hook(self._hook(i)) for i, (_, m) in enumerate(layers)]

    def _hook(self, i: int):
        def hook(module, inputs, output):
            if not (module.training and self.active):
                return  # evaluation and the range test are not part of the training record
            a = output.detach().float()
            hist = torch.histc(a, HIST_BINS, 0, HIST_MAX)
            row = self.buffer[self.slot, i]
            row[0] = a.mean()
            row[1] = a.std()
            row[2] = hist[:2].sum() / hist.sum().clamp_min(1)
            row[3:] = hist
        return hook

    def step_done(self, step: int) -> None:
        self.steps.append(step)
        self.slot += 1

    @property
    def full(self) -> bool:
        return self.slot >= len(self.buffer)

    def drain(self) -> tuple[list[dict], list[dict]]:
        """(stats rows, histogram rows) recorded since the last drain: one host read."""
        if not self.steps:
            return [], []
        values = self.buffer[:self.slot].tolist()
        stats, hists = [], []
        for step, per_layer in zip(self.steps, values):
            for name, v in zip(self.names, per_layer):
                stats.append({"step": step, "layer": name, "mean": v[0], "std": v[1], "near_zero": v[2]})
                hists.append({"step": step, "layer": name, **{f"h{j}": v[3 + j] for j in range(HIST_BINS)}})
        self.steps, self.slot = [], 0
        return stats, hists

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


STAT_COLUMNS = ["step", "layer", "mean", "std", "near_zero"]
HIST_COLUMNS = ["step", "layer"] + [f"h{j}" for j in range(HIST_BINS)]
