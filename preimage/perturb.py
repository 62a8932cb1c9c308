"""Perturbations of the network's residual blocks while an image is optimized through it.

A pre-image fitted to one network's features is, like an adversarial example, partly tuned to that
network's particular weights. Two ways from the literature on adversarial transfer make it depend
less on them, at no extra cost per step:

- **skip erosion** (ghost networks, Li et al., AAAI 2020): at every step each residual block's
  shortcut is scaled by its own random factor ``λ ~ U(1 − r, 1 + r)``, so the image is fitted to a
  new, slightly different network each step (an ensemble for the price of one);
- **skip gradients** (SGM, Wu et al., ICLR 2020): the forward pass is unchanged but the gradient
  through each block's residual branch is scaled by ``γ < 1``, so more of it flows through the
  shortcuts (the low-level, more transferable paths).

A residual block is a module with ``has_skip`` true (timm's EfficientNet and MobileNet blocks) or
``use_res_connect`` true (torchvision's MobileNet and EfficientNet blocks): its output is its input
plus the branch. :class:`ResidualPerturbation` hooks them for as long as it is open::

    with ResidualPerturbation(model, erosion=0.2, skip_grad=0.5, until=240) as p:
        optimize(..., transforms=[p.transform, ...])

Its ``transform`` leaves the input as it is: it only draws the factors of the next forward pass
from the run's generator, for the first ``until`` calls; after that the blocks run as they are.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import PreimageError

__all__ = ["residual_blocks", "ResidualPerturbation"]


def residual_blocks(net: nn.Module) -> list[nn.Module]:
    """The blocks of ``net`` whose output is their input plus a residual branch."""
    return [m for m in net.modules() if getattr(m, "has_skip", False) is True
            or getattr(m, "use_res_connect", False) is True]


class ResidualPerturbation:
    """Skip erosion (``erosion`` r: shortcuts scaled by U(1 − r, 1 + r), drawn per block and step) and
    skip gradients (``skip_grad`` γ: the residual branches' gradient scaled by γ) on the residual
    blocks of ``model``, for the first ``until`` forward passes of the optimization (see the module
    docstring). A context manager: the hooks are removed on exit."""

    def __init__(self, model: Any, *, erosion: float = 0.0, skip_grad: float = 1.0, until: int = 0):
        if erosion < 0 or erosion >= 1:
            raise PreimageError(f"erosion must be in [0, 1), not {erosion}")
        if not 0 <= skip_grad <= 1:
            raise PreimageError(f"skip_grad must be in [0, 1], not {skip_grad}")
        self.blocks = residual_blocks(model.net)
        if not self.blocks:
            raise PreimageError(f"{model.name} has no residual blocks to perturb (erosion and skip_grad need "
                                "blocks whose output is their input plus a branch)")
        self.erosion, self.skip_grad, self.until = float(erosion), float(skip_grad), int(until)
        self.calls = 0
        self.factors: list[float] | None = None  # None: the blocks run as they are
        self._handles: list[Any] = []

    def __enter__(self) -> "ResidualPerturbation":
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.factors = None

    def transform(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Draw the next pass's factors (an identity on ``x``)."""
        self.calls += 1
        if self.calls > self.until:
            self.factors = None
        else:
            r = self.erosion
            self.factors = (1 + r * (2 * torch.rand(len(self.blocks), generator=g) - 1)).tolist()
        return x

    def _hook(self, i: int):
        def fn(_m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor | None:
            if self.factors is None:
                return None
            x = inputs[0]
            if self.skip_grad != 1.0:  # same value, the branch's gradient scaled by γ
                branch = out - x
                out = out - (1 - self.skip_grad) * (branch - branch.detach())
            if self.erosion:
                out = out + (self.factors[i] - 1) * x
            return out

        return fn
