"""Batch augmentation on the device: crops are windows of the reflect-padded image, flips are mirrors."""

import torch
import torch.nn.functional as F

from onecycle_cli.augment import augment, draw_epoch, epoch_generator, normalize
from onecycle_cli.config import DataConfig
from onecycle_cli.datasets import Dataset, load_dataset
from onecycle_cli.loader import TrainBatches

CPU = torch.device("cpu")


def images(n=64, c=3, s=12):
    return torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_crops_are_windows_of_the_reflect_padded_image_and_flips_are_mirrors():
    x, pad = images(), 4
    draws = draw_epoch(len(x), pad, True, epoch_generator(0, 0, CPU), CPU)
    out = augment(x, draws.order, draws.dy, draws.dx, draws.flip, pad, True)
    padded = F.pad(x.float(), (pad,) * 4, mode="reflect").to(torch.uint8)  # torchvision's padding_mode="reflect"
    h, w = x.shape[2:]
    for i in range(len(x)):
        src, dy, dx = draws.order[i], draws.dy[i], draws.dx[i]
        window = padded[src, :, dy:dy + h, dx:dx + w]
        expected = window.flip(-1) if draws.flip[i] else window
        assert torch.equal(out[i], expected), i
    # every offset and both flip states actually occur
    assert set(draws.dy.tolist()) == set(range(2 * pad + 1)) and draws.flip.any() and not draws.flip.all()


def test_switches_turn_each_part_off():
    x = images()
    order = torch.arange(len(x))
    zeros = torch.zeros(len(x), dtype=torch.long)
    mirror = torch.ones(len(x), dtype=torch.bool)
    assert torch.equal(augment(x, order, zeros, zeros, mirror, 0, False), x)  # no pad, no flip: the images
    assert torch.equal(augment(x, order, zeros, zeros, mirror, 0, True), x.flip(-1))  # flip alone
    shifted = augment(x, order, zeros + 4, zeros + 4, mirror, 4, False)  # offset = pad: the original window
    assert torch.equal(shifted, x)


def test_labels_travel_with_their_images():
    # every pixel of image i holds i, so an augmented image still says where it came from
    n = 96
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()
    y = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(1))
    ds = Dataset("ids", x, y, x[:4], y[:4], [str(i) for i in range(10)], torch.zeros(3), torch.ones(3))
    batches = TrainBatches(ds, DataConfig(dataset="synthetic", flip=True, crop=True, pad=4), 32, seed=3)
    seen = []
    for xb, yb in batches.epoch(0):
        ids = xb[:, 0, 0, 0].long()
        assert (xb == xb[:, :1, :1, :1]).all()  # still constant images: nothing mixed between samples
        assert torch.equal(yb, y[ids])
        seen += ids.tolist()
    assert sorted(seen) == list(range(n))


def test_same_seed_same_batches_other_seed_or_epoch_differs():
    ds = load_dataset(DataConfig(dataset="synthetic", train_size=128, valid_size=16))
    cfg = DataConfig(dataset="synthetic")

    def epoch(seed, e):
        return [(x.clone(), y.clone()) for x, y in TrainBatches(ds, cfg, 32, seed=seed).epoch(e)]
    a, b = epoch(1, 0), epoch(1, 0)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][0], epoch(2, 0)[0][0])
    assert not torch.equal(a[0][0], epoch(1, 1)[0][0])


def test_epoch_is_a_permutation_without_repeats_and_drops_the_last_partial_batch():
    ds = load_dataset(DataConfig(dataset="synthetic", train_size=100, valid_size=16))
    batches = TrainBatches(ds, DataConfig(dataset="synthetic", flip=False, crop=False, normalize=False), 32, seed=0)
    assert batches.steps_per_epoch == 3
    seen = torch.cat([x for x, _ in batches.epoch(0)])
    assert len(seen) == 96 and len(torch.unique(seen.flatten(1), dim=0)) == 96


def test_normalize_standardises_each_channel():
    x = images(512)
    mean = x.float().mean((0, 2, 3))
    std = x.float().std((0, 2, 3))
    z = normalize(x, mean, std)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=1e-3)
    assert torch.allclose(normalize(x, None, None), x.float() / 255)
