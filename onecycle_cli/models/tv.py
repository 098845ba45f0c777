"""torchvision's classification models by name: `onecycle train --model tv:resnet34 --set model.pretrained=true`.

Any name of `torchvision.models.list_models(module=torchvision.models)`. The model is built as
torchvision publishes it (1000 ImageNet classes, RGB), its weights loaded when asked for, and then
adapted: the stem to the data's channels (`stem.py`) and the classifier replaced by a fresh layer
with one output per class. torchvision refuses another class count once weights are given, so the
replacement is ours: the last Linear (or 1x1 Conv2d, squeezenet's) producing the 1000 classes under
the first of the attributes torchvision uses for classifiers: `fc` (ResNets, RegNets, GoogLeNet,
ShuffleNet), `classifier` (`classifier[-1]`: VGG, AlexNet, EfficientNet, MobileNet, ConvNeXt, MaxViT;
`classifier` itself: DenseNet), `heads` (`heads.head`: ViT), `head` (Swin).
"""

from __future__ import annotations

import difflib

from torch import nn

from ..errors import UsageError
from .pretrained import Built, Weights, hub_file, load_matching, read_weights, require_body
from .stem import adapt_channels, set_submodule

IMAGENET_CLASSES = 1000
HEAD_PATHS = ("fc", "classifier", "heads", "head")
# builders whose defaults are wrong for a model trained here: auxiliary heads change what forward returns,
# and without init_weights torchvision warns on every build
EXTRA_ARGS = {"googlenet": {"aux_logits": False, "init_weights": True},
              "inception_v3": {"aux_logits": False, "init_weights": True}}


def names() -> list[str]:
    import torchvision.models
    return torchvision.models.list_models(module=torchvision.models)


def check_name(name: str) -> None:
    known = names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        raise UsageError(f"model.name = 'tv:{name}': torchvision has no classification model {name!r}"
                         + (f" (closest: {', '.join('tv:' + c for c in close)})" if close else "")
                         + "; the names are torchvision.models.list_models()")


def default_weights(name: str):
    """The weights torchvision calls DEFAULT for this model (known offline: they are code, not a download)."""
    import torchvision.models
    return torchvision.models.get_model_weights(name).DEFAULT


def stats(name: str) -> dict:
    """The mean and std (pixel units) the default weights were trained with, from their own transforms."""
    weights = default_weights(name)
    t = weights.transforms()
    return {"source": f"torchvision {weights}", "mean": [m * 255 for m in t.mean], "std": [s * 255 for s in t.std]}


def head_path(model: nn.Module, outputs: int = IMAGENET_CLASSES) -> str:
    """The dotted path of the classifier layer: the last Linear / 1x1 Conv2d giving `outputs` under a known
    attribute."""
    for attr in HEAD_PATHS:
        root = getattr(model, attr, None)
        if not isinstance(root, nn.Module):
            continue
        found = [n for n, m in root.named_modules()
                 if (isinstance(m, nn.Linear) and m.out_features == outputs)
                 or (isinstance(m, nn.Conv2d) and m.out_channels == outputs and m.kernel_size == (1, 1))]
        if found:
            return f"{attr}.{found[-1]}" if found[-1] else attr
    raise ValueError(f"{type(model).__name__}: no classifier with {outputs} outputs under {', '.join(HEAD_PATHS)}")


def replace_head(model: nn.Module, path: str, num_classes: int) -> None:
    old = model.get_submodule(path)
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                        device=old.weight.device, dtype=old.weight.dtype)
    else:
        new = nn.Conv2d(old.in_channels, num_classes, 1, device=old.weight.device, dtype=old.weight.dtype)
    set_submodule(model, path, new)


def build(name: str, in_channels: int, num_classes: int, pretrained: bool | str, download: bool,
          load_weights: bool = True, classes: list[str] | None = None) -> Built:
    import torchvision.models
    check_name(name)
    extra = dict(EXTRA_ARGS.get(name, {}))
    if pretrained is not False and name in EXTRA_ARGS and in_channels == 3:
        extra["transform_input"] = True  # as torchvision's builder sets it for these ported weights
    model = torchvision.models.get_model(name, weights=None, **extra)
    head = head_path(model)
    built = Built(model, head=(head,))
    weights: Weights | None = None
    if pretrained is not False and load_weights:
        if pretrained is True:
            enum = default_weights(name)
            weights = read_weights(hub_file(enum.url, f"tv:{name}", download), "pretrained")
            weights.source = f"torchvision {enum} ({weights.source})"
        else:
            weights = read_weights(pretrained)
        if weights.kind == "state_dict":  # a library state_dict fits the model as torchvision builds it
            built.loaded = load_matching(model, weights)
            require_body(built.loaded, model, (head,), f"tv:{name}", "model.pretrained")
    adapted = adapt_channels(model, in_channels, pretrained=pretrained is not False)
    if adapted:
        built.notes.append(adapted)
    replace_head(model, head, num_classes)
    built.notes.append(f"{head}: a new layer of {num_classes} outputs")
    if weights is not None and weights.kind == "onecycle":  # a onecycle run's weights fit the adapted model
        built.loaded = load_matching(model, weights, (head,), classes)
        require_body(built.loaded, model, (head,), f"tv:{name}", "model.pretrained")
        built.normalize = weights.normalize
    elif pretrained is not False:
        built.normalize = stats(name)
    return built
