"""A moving average of the weights beside the trained ones: `onecycle train --set train.ema=0.999`.

timm users' `--model-ema` (timm's ModelEmaV3 with `--model-ema-warmup`): after every optimiser step,
each floating-point parameter and buffer of a copy of the model moves towards the model's,
ema <- decay x ema + (1 - decay) x model, and the integer buffers (BatchNorm's batch count) are
copied. The decay warms up as timm's does, 1 - (1 + t)^(-2/3) capped at `train.ema`, t counting the
optimiser steps before this one (the first step copies the weights), so early updates are not
dragged back to the random start. The update is one fused `lerp` on the device: no host read. The
average is scored after every epoch (metrics.csv's `ema_valid_loss`, `ema_accuracy`), saved in
last.pt beside the model and restored exactly by `--resume`; `onecycle evaluate|predict|export
--checkpoint ema` use it. Under torchrun every rank updates its own copy from the same parameters
(DDP keeps them equal), so every rank holds the same averaged parameters; BatchNorm's running
statistics are each rank's own between epochs and rank 0's wherever they are read (the evaluation
broadcasts them, as it does the model's), so what is scored and saved is the same on every rank.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

WARMUP_POWER = 2 / 3  # timm's ModelEmaV3 warmup_power (warmup_gamma 1)


def decay_at(step: int, decay: float) -> float:
    """The decay of the update after optimiser step `step` (1 for the first step)."""
    t = step - 1
    if t <= 0:
        return 0.0
    return max(min(1 - (1 + t) ** -WARMUP_POWER, decay), 0.0)


class WeightEma:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        ours = dict(self.module.named_parameters()) | dict(self.module.named_buffers())
        theirs = dict(model.named_parameters()) | dict(model.named_buffers())
        self.floats = ([ours[k] for k in ours if ours[k].is_floating_point()],
                       [theirs[k] for k in ours if ours[k].is_floating_point()])
        self.others = [(ours[k], theirs[k]) for k in ours if not ours[k].is_floating_point()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move towards the model's weights after optimiser step `step` (counted over the whole run)."""
        d = decay_at(step, self.decay)
        mine, model = self.floats
        if d == 0.0:
            torch._foreach_copy_(mine, model)
        else:
            torch._foreach_lerp_(mine, model, 1.0 - d)
        for mine_, theirs in self.others:
            mine_.copy_(theirs)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)  # strict: a tensor missing or of another shape raises
