"""Schedules stepped per batch: `onecycle schedule --config cifar`."""

import pytest
import torch

from onecycle_cli.config import OptimConfig, ScheduleConfig
from onecycle_cli.optim import build_optimizer, param_groups
from onecycle_cli.schedules import phase_changes, preview

STEPS = 1000


def test_torch_shape_is_onecyclelr_at_every_step():
    ours_lr, ours_mom = preview(ScheduleConfig(shape="torch", max_lr=0.3), STEPS)
    p = [torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD(p, lr=0.3, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=STEPS)  # torch's own defaults
    for i in range(STEPS):
        assert ours_lr[i] == opt.param_groups[0]["lr"] and ours_mom[i] == opt.param_groups[0]["momentum"], i
        opt.step()
        ref.step()


def peak(lrs):
    return max(range(len(lrs)), key=lrs.__getitem__)


def test_fastai_shape_two_cosine_phases():
    lrs, moms = preview(ScheduleConfig(shape="fastai", max_lr=1.0), STEPS)
    assert lrs[0] == pytest.approx(1 / 25) and moms[0] == pytest.approx(0.95)
    assert peak(lrs) == 249 and lrs[249] == pytest.approx(1.0) and moms[249] == pytest.approx(0.85)
    assert lrs[-1] == pytest.approx(1 / 1e5, rel=1e-3) and moms[-1] == pytest.approx(0.95, abs=1e-6)
    # cosine: a quarter into the warm-up the LR has risen by far less than a quarter of the way
    assert lrs[62] < 1 / 25 + 0.25 * (1 - 1 / 25)


def test_smith_shape_three_linear_phases():
    cfg = ScheduleConfig(shape="smith", max_lr=0.8)
    lrs, moms = preview(cfg, STEPS)
    assert lrs[0] == pytest.approx(0.08) and peak(lrs) == 449 and lrs[449] == pytest.approx(0.8)
    assert lrs[898] == pytest.approx(0.08, rel=1e-6)  # down again, symmetric, by 90% of training
    assert lrs[-1] == pytest.approx(0.8 / 1e3, rel=1e-2)  # then annihilation far below the start
    # linear: equal steps up
    assert lrs[100] - lrs[99] == pytest.approx(lrs[300] - lrs[299])
    assert moms[449] == pytest.approx(0.85) and moms[-1] == pytest.approx(0.95)
    assert [name for name, _ in phase_changes(cfg, STEPS)] == ["warm-up", "cool-down", "annihilation"]


@pytest.mark.parametrize("key,value", [("div", 10.0), ("final_div", 1e3), ("pct_start", 0.4), ("anneal", "linear"),
                                       ("max_momentum", 0.9), ("base_momentum", 0.8)])
def test_every_onecycle_parameter_is_honoured(key, value):
    cfg = ScheduleConfig(shape="fastai", max_lr=1.0, **{key: value})
    lrs, moms = preview(cfg, STEPS)
    if key == "div":
        assert lrs[0] == pytest.approx(0.1)
    elif key == "final_div":
        assert lrs[-1] == pytest.approx(1e-3, rel=1e-3)
    elif key == "pct_start":
        assert peak(lrs) == 399
    elif key == "anneal":
        assert lrs[100] - lrs[99] == pytest.approx(lrs[200] - lrs[199])
    else:
        assert (moms[0] if key == "max_momentum" else moms[249]) == pytest.approx(value)


def test_adamw_cycles_beta1():
    lrs, moms = preview(ScheduleConfig(shape="fastai", max_lr=1.0), STEPS, optimizer="adamw")
    assert moms[0] == pytest.approx(0.95) and moms[249] == pytest.approx(0.85)


def test_baselines():
    const, mom = preview(ScheduleConfig(name="constant", max_lr=0.1), STEPS, momentum=0.9)
    assert set(const) == {0.1} and set(mom) == {0.9}
    step, _ = preview(ScheduleConfig(name="step", max_lr=0.1), STEPS)
    assert step[499] == pytest.approx(0.1) and step[500] == pytest.approx(0.01) and step[750] == pytest.approx(0.001)
    cos, _ = preview(ScheduleConfig(name="cosine", max_lr=0.1), STEPS)
    assert cos[0] == pytest.approx(0.1) and cos[500] == pytest.approx(0.05, rel=1e-2) and cos[-1] < 1e-3
    assert all(a >= b for a, b in zip(cos, cos[1:]))


def test_weight_decay_can_spare_batchnorm_and_biases():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    groups = param_groups(model, OptimConfig(weight_decay=0.1, wd_bn_bias=False))
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert sum(p.numel() for p in groups[0]["params"]) == 4 * 9 + 2 * 4  # conv and linear weights only
    assert len(param_groups(model, OptimConfig(weight_decay=0.1))) == 1


def test_optimisers():
    model = torch.nn.Linear(3, 2)
    sgd = build_optimizer(OptimConfig(name="sgd", momentum=0.9, nesterov=True), model, 0.1)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]
    adamw = build_optimizer(OptimConfig(name="adamw", betas=[0.9, 0.99], eps=1e-5, weight_decay=0.01), model, 0.1)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.9, 0.99)
    held = build_optimizer(OptimConfig(name="adamw"), model, 0.1, momentum=0.8)
    assert held.param_groups[0]["betas"][0] == 0.8


def test_schedule_command_previews_without_data(cli, tmp_path):
    r = cli("schedule", "--config", "cifar", "--json", "--out", tmp_path / "s.png")  # no CIFAR-10 on disk here
    assert r.code == 0, r.stderr
    s = r.json()
    assert s["steps_per_epoch"] == 50_000 // 512 and s["steps"] == 97 * 95
    assert s["start_lr"] == pytest.approx(0.08) and s["peak_lr"] == pytest.approx(0.8, rel=1e-3)
    assert s["final_lr"] == pytest.approx(0.8 / 1e3, rel=0.05)
    assert [p["name"] for p in s["phases"]] == ["warm-up", "cool-down", "annihilation"]
    assert (tmp_path / "s.png").stat().st_size > 10_000
