"""Model shapes and sizes: `onecycle train --model resnet20`."""

import pytest
import torch

from onecycle_cli.config import ModelConfig
from onecycle_cli.models import MODELS, build_model, count_parameters


@pytest.mark.parametrize("name,params", [
    # He et al. 2016, table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M with the parameter-free shortcut
    ("resnet20", 269_722), ("resnet32", 464_154), ("resnet44", 658_586), ("resnet56", 853_018),
    ("resnet110", 1_727_962),
])
def test_cifar_resnet_parameter_counts(name, params):
    assert count_parameters(build_model(ModelConfig(name=name), 3, 10)) == params


def test_resnet_forward_on_cifar_and_mnist_shapes():
    model = build_model(ModelConfig(name="resnet20"), 3, 10).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    grey = build_model(ModelConfig(name="resnet20"), 1, 10).eval()
    assert grey(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_option_a_shortcut_pads_channels_with_zeros():
    block = build_model(ModelConfig(name="resnet20"), 3, 10).blocks[3]  # the first block of the 32-channel stage
    x = torch.randn(1, 16, 8, 8)
    short = block.shortcut(x)
    assert short.shape == (1, 32, 4, 4)
    assert torch.equal(short[:, 8:24], x[:, :, ::2, ::2]) and not short[:, :8].any() and not short[:, 24:].any()


def test_fastai_v1_simple_cnn():
    cfg = ModelConfig(name="simple_cnn", channels=[3, 16, 16, 2], kernel_sizes=[3], strides=[2], batchnorm=False,
                      final_relu=True)
    model = build_model(cfg, 3, 2)
    # conv 3->16, 16->16, 16->2, 3x3 stride 2 with bias, each followed by ReLU, then average pooling
    assert count_parameters(model) == (3 * 16 * 9 + 16) + (16 * 16 * 9 + 16) + (16 * 2 * 9 + 2)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    out = model(torch.randn(4, 3, 28, 28))
    assert out.shape == (4, 2) and (out >= 0).all()  # v1's last ReLU: the logits are never negative


def test_fastai_book_simple_cnn():
    model = build_model(ModelConfig(name="simple_cnn"), 1, 10)  # the defaults are the book's net
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (1, 8, 5, 2), (8, 16, 3, 2), (16, 32, 3, 2), (32, 64, 3, 2), (64, 10, 3, 2)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 5
    assert count_parameters(model) == 30_542
    out = model.eval()(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10) and (out < 0).any()  # no ReLU on the logits


def test_every_model_is_chosen_from_one_dict():
    assert set(MODELS) == {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "simple_cnn"}
