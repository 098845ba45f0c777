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


@pytest.mark.parametrize("name,head,channels", [
    ("tv:resnet18", "fc", 1), ("tv:resnet18", "fc", 3), ("tv:mobilenet_v3_small", "classifier.3", 1),
    ("tv:squeezenet1_1", "classifier.1", 3), ("timm:resnet10t", "fc", 1), ("timm:resnet10t", "fc", 3),
])
def test_library_models_train_at_32px_with_a_new_head(name, head, channels):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), channels, 7).train()
    x, y = torch.randn(4, channels, 32, 32), torch.tensor([0, 3, 6, 2])
    out = model(x)
    assert out.shape == (4, 7)  # one logit per class of the data, not ImageNet's 1000
    new = model.get_submodule(head)
    assert (new.out_features if isinstance(new, torch.nn.Linear) else new.out_channels) == 7
    torch.nn.functional.cross_entropy(out, y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    stem = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert stem.in_channels == channels


def test_parameter_groups_of_each_family():
    from onecycle_cli.models import build, layer_groups
    cases = {"resnet20": ["stem..stage1", "stage2..stage3", "head"], "simple_cnn": ["body", "head"],
             "tv:resnet18": ["stem..layer2", "layer3..layer4", "head"], "tv:vit_b_32": ["body", "head"]}
    for name, names in cases.items():
        built = build(ModelConfig(name=name), 1, 10)
        groups = layer_groups(built.model, name, built.head)
        assert [g.name for g in groups] == names
        params = [id(p) for g in groups for p in g.params]
        assert len(params) == len(set(params)) == len(list(built.model.parameters()))  # each parameter once
        head_params = {id(p) for p in built.model.get_submodule(built.head[0]).parameters()}
        assert {id(p) for p in groups[-1].params} == head_params
    model = build(ModelConfig(name="tv:resnet18"), 3, 10).model
    first, middle, _ = layer_groups(model, "tv:resnet18", ("fc",))
    # fastai's _resnet_split: conv1, bn1, layer1, layer2 | layer3, layer4 | head
    assert {id(p) for p in first.params} == {id(p) for m in (model.conv1, model.bn1, model.layer1, model.layer2)
                                             for p in m.parameters()}
    assert sum(first.norm) == 2 * sum(isinstance(m, torch.nn.BatchNorm2d) for m in
                                      (model.bn1, *model.layer1.modules(), *model.layer2.modules()))
