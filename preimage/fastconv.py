"""A faster input gradient for strided convolutions with frozen weights.

The input gradient of a convolution with stride ``s`` is a transposed convolution with stride ``s``,
which CPU backends compute slowly: for AlexNet's first layer (11×11, stride 4) it costs several times
the forward pass. The same gradient is a stride-1 convolution in polyphase form: split the kernel into
its ``s×s`` phases (``w[..., a::s, b::s]``), correlate the output gradient with all phases at once as
one convolution with ``s·s`` times the output channels, and interleave the phases back into the input
grid (a pixel shuffle). Same arithmetic, run by the fast stride-1 kernels (measured by
benchmarks/invert_speed.py: the bare AlexNet conv1 step drops from 8.2 to 5.5 ms).

The engine applies it on the CPU, inside :func:`fast_strided_convs`, to plain ``nn.Conv2d`` layers
that are dense (``groups=1``), undilated, zero-padded, strided with overlapping windows (kernel larger
than stride), and whose weights do not require gradients. Everything else runs as PyTorch runs it.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def polyphase_kernel(weight: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """The kernel of the polyphase correlation, ``(c_in·sh·sw, c_out, ⌈kh/sh⌉, ⌈kw/sw⌉)``."""
    sh, sw = stride
    c_out, c_in, kh, kw = weight.shape
    th, tw = -(-kh // sh), -(-kw // sw)  # taps per phase
    w = F.pad(weight.detach(), (0, tw * sw - kw, 0, th * sh - kh))
    # w[o, i, sh*p + a, sw*q + b] -> phases[(i, a, b), o, th-1-p, tw-1-q]: one correlation per phase
    phases = (w.reshape(c_out, c_in, th, sh, tw, sw).permute(1, 3, 5, 0, 2, 4)
              .flip(-1, -2).reshape(c_in * sh * sw, c_out, th, tw).contiguous())
    return phases


def polyphase_input_grad(grad_out: torch.Tensor, phases: torch.Tensor, input_hw: tuple[int, int],
                         stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """Gradient of ``conv2d(x, w, stride=stride, padding=padding)`` with respect to ``x``, given
    ``phases = polyphase_kernel(w, stride)``."""
    sh, sw = stride
    c_in = phases.shape[0] // (sh * sw)
    th, tw = phases.shape[-2:]
    y = F.conv2d(grad_out, phases, padding=(th - 1, tw - 1))
    n, _, gh, gw = y.shape
    y = y.reshape(n, c_in, sh, sw, gh, gw).permute(0, 1, 4, 2, 5, 3).reshape(n, c_in, gh * sh, gw * sw)
    h, wd = input_hw
    ph, pw = padding
    short_h, short_w = max(0, ph + h - y.shape[-2]), max(0, pw + wd - y.shape[-1])
    if short_h or short_w:  # input rows/columns no window reaches: zero gradient
        y = F.pad(y, (0, short_w, 0, short_h))
    return y[..., ph:ph + h, pw:pw + wd]


# Per module: (weight, its version, stride, polyphase kernel), so the kernel is rebuilt only when
# the weights change, in place or replaced (the weight is held weakly and compared by identity).
_PHASES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _phases_of(m: nn.Conv2d) -> torch.Tensor:
    hit = _PHASES.get(m)
    if hit is not None:
        weight_ref, version, stride, phases = hit
        if weight_ref() is m.weight and version == m.weight._version and stride == m.stride:
            return phases
    phases = polyphase_kernel(m.weight, m.stride)
    _PHASES[m] = (weakref.ref(m.weight), m.weight._version, m.stride, phases)
    return phases


class _StridedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, phases):
        ctx.save_for_backward(phases)
        ctx.geometry = (tuple(x.shape[-2:]), stride, padding)
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        (phases,) = ctx.saved_tensors
        grad_x = polyphase_input_grad(grad_out, phases, *ctx.geometry) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None, None, None


def eligible(m: nn.Module) -> bool:
    """Whether ``m`` is a convolution this module speeds up (see the module docstring)."""
    return (type(m).forward is nn.Conv2d.forward and m.groups == 1 and m.dilation == (1, 1)
            and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
            and any(s > 1 for s in m.stride) and all(k > s for k, s in zip(m.kernel_size, m.stride))
            and not m.weight.requires_grad and (m.bias is None or not m.bias.requires_grad))


def _forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if not x.requires_grad or x.dim() != 4:  # (unbatched inputs take the plain path)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
    return _StridedConv.apply(x, self.weight, self.bias, self.stride, self.padding, _phases_of(self))


@contextlib.contextmanager
def fast_strided_convs(modules: list[nn.Module]) -> Iterator[None]:
    """Within the block, the eligible modules among ``modules`` use the polyphase input gradient."""
    patched = [m for m in modules if eligible(m) and "forward" not in m.__dict__]
    for m in patched:
        m.forward = _forward.__get__(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward
