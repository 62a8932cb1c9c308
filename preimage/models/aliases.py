"""Paper names for the layers of classic networks.

AlexNet (Krizhevsky et al. 2012): conv1..conv5, relu1..relu5, pool1, pool2, pool5, fc6..fc8, relu6, relu7.
VGG (Simonyan & Zisserman 2015): conv1_1..conv5_3 (and bn1_1.. for the _bn variants), relu1_1..,
pool1..pool5, fc6..fc8, relu6, relu7. ResNet (He et al. 2016): conv1, pool1, res2..res5 (= layer1..4),
pool5, fc. EfficientNet: stem, stage0..stage6 (= blocks.0..6), head.
"""
from __future__ import annotations

from torch import nn

__all__ = ["torchvision_aliases", "efficientnet_aliases"]


def _classifier_aliases(prefix: str, classifier: nn.Module, first_fc: int = 6) -> dict[str, str]:
    out: dict[str, str] = {}
    k = first_fc - 1
    for name, m in classifier.named_children():
        path = f"{prefix}.{name}"
        if isinstance(m, nn.Linear):
            k += 1
            out[f"fc{k}"] = path
        elif isinstance(m, nn.ReLU):
            out[f"relu{k}"] = path
        elif isinstance(m, nn.Dropout) and k >= first_fc:
            out[f"drop{k}"] = path
    return out


def _alexnet(net: nn.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    k = 0
    for name, m in net.features.named_children():
        path = f"features.{name}"
        if isinstance(m, nn.Conv2d):
            k += 1
            out[f"conv{k}"] = path
        elif isinstance(m, nn.ReLU):
            out[f"relu{k}"] = path
        elif isinstance(m, nn.MaxPool2d):
            out[f"pool{k}"] = path
    return {**out, **_classifier_aliases("classifier", net.classifier)}


def _vgg(net: nn.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    block, i = 1, 0
    for name, m in net.features.named_children():
        path = f"features.{name}"
        if isinstance(m, nn.Conv2d):
            i += 1
            out[f"conv{block}_{i}"] = path
        elif isinstance(m, nn.BatchNorm2d):
            out[f"bn{block}_{i}"] = path
        elif isinstance(m, nn.ReLU):
            out[f"relu{block}_{i}"] = path
        elif isinstance(m, nn.MaxPool2d):
            out[f"pool{block}"] = path
            block, i = block + 1, 0
    return {**out, **_classifier_aliases("classifier", net.classifier)}


def _resnet(net: nn.Module) -> dict[str, str]:
    out = {"pool1": "maxpool", "pool5": "avgpool"}
    for k in range(1, 5):
        if hasattr(net, f"layer{k}"):
            out[f"res{k + 1}"] = f"layer{k}"
    return out


def torchvision_aliases(name: str, net: nn.Module) -> dict[str, str]:
    """Paper aliases for a torchvision model (empty for families without a paper convention)."""
    if name == "alexnet":
        return _alexnet(net)
    if name.startswith("vgg"):
        return _vgg(net)
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        return _resnet(net)
    return {}


def efficientnet_aliases(net: nn.Module) -> dict[str, str]:
    out = {"stem": "bn1", "head": "bn2"}
    for s in range(len(net.blocks)):
        out[f"stage{s}"] = f"blocks.{s}"
    return out
