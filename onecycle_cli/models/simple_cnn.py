"""fastai's simple_cnn: `onecycle train --config mnist_sample`.

A stack of stride-2 convs from a list of channels, then average pooling. channels (3, 16, 16, 2)
without BatchNorm and with a ReLU on the last conv is fastai v1's `simple_cnn((3,16,16,2))`;
channels (1, 8, 16, 32, 64, 10), kernel 5 then 3, with BatchNorm, is the fastai book's MNIST net
(chapter 13).
"""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig


class SimpleCNN(nn.Sequential):
    def __init__(self, cfg: ModelConfig):
        ch = cfg.channels
        n = len(ch) - 1
        ks = cfg.kernel_sizes * n if len(cfg.kernel_sizes) == 1 else cfg.kernel_sizes
        st = cfg.strides * n if len(cfg.strides) == 1 else cfg.strides
        layers = []
        for i in range(n):
            parts: list[nn.Module] = [nn.Conv2d(ch[i], ch[i + 1], ks[i], st[i], ks[i] // 2)]
            if cfg.batchnorm:
                parts.append(nn.BatchNorm2d(ch[i + 1]))
            if i < n - 1 or cfg.final_relu:
                parts.append(nn.ReLU())
            layers.append(nn.Sequential(*parts))
        super().__init__(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def stat_layers(self) -> list[tuple[str, nn.Module]]:
        return [(f"conv{i + 1}", m) for i, m in enumerate(list(self)[:-2])]
