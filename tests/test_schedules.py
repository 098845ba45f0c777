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


# -- schedule.png: every phase named up its line, no name over another's ---------------------------------------
SHORT_PHASES = {
    "fastai, pct_start 0.05, 1 epoch": ["schedule.pct_start=0.05"],
    "smith's three phases, pct_start 0.05, 1 epoch": ["schedule.shape=smith", "schedule.pct_start=0.05"],
    "fine_tune, 1 frozen + 1 unfrozen epoch": ["train.freeze_epochs=1", "optim.lr_mult=10"],
    "fine_tune in smith's shape": ["train.freeze_epochs=1", "schedule.shape=smith", "schedule.freeze_pct_start=0.45",
                                   "schedule.unfreeze_pct_start=0.05"],
    "step, milestones a step apart": ["schedule.name=step", "schedule.milestones=[0.5,0.525,0.55,0.575]"],
}


def drawn_schedule(sets: list[str], steps_per_epoch: int = 40):
    """The figure `onecycle schedule --config mnist_sample --set ...` saves, and its phases."""
    from onecycle_cli.config import resolve
    from onecycle_cli.models import group_names
    from onecycle_cli.runs.plots import draw_schedule
    from onecycle_cli.schedules import cycle_phase_changes, cycles, preview_cycles
    cfg = resolve("mnist_sample", [*sets, "train.epochs=1"]).config
    plan = cycles(cfg, len(group_names(cfg.model.name)))
    group_lrs, moms = preview_cycles(plan, steps_per_epoch, cfg.optim.name, cfg.optim.betas[0])
    phases = cycle_phase_changes(plan, steps_per_epoch)
    shown = {f"lr_{i}": lrs for i, lrs in enumerate(group_lrs)} if len(plan) > 1 else group_lrs[-1]
    return draw_schedule(range(len(moms)), shown, moms, "t", phases), phases


@pytest.mark.parametrize("case", list(SHORT_PHASES))
def test_schedule_png_names_every_phase_with_no_label_over_another(case):
    fig, phases = drawn_schedule(SHORT_PHASES[case])
    renderer = fig.canvas.get_renderer()
    lr_panel = fig.axes[0]
    panel = lr_panel.get_window_extent(renderer)
    labels = [t for t in lr_panel.texts if t.get_text()]
    assert [t.get_text() for t in labels] == [name for name, _ in phases[1:]]  # every phase after the first, in place
    assert [t.get_text() for t in fig.texts] == ["t"]  # the title alone: no name pushed into a note under the panel
    boxes = [t.get_window_extent(renderer) for t in labels]
    inside = panel.padded(0.5)  # half a pixel for rounding
    for i, box in enumerate(boxes):
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1, labels[i]
        for j in range(i):
            assert not box.overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
    # close phases were there to be kept apart: some two lines are nearer than a label is thick
    lines = sorted(lr_panel.transData.transform((step, 0))[0] for _, step in phases[1:])
    if case.startswith("fastai"):  # two phases: one name, one step after the start
        assert len(boxes) == 1 and phases[1][1] == 1
    else:
        assert min(b - a for a, b in zip(lines, lines[1:])) < max(b.width for b in boxes)
    from onecycle_cli.runs.plots import pyplot
    pyplot().close(fig)
