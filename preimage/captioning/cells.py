"""The two recurrent cells of the captioner, one step each, written out.

Both keep PyTorch's parameter names and shapes (``weight_ih``, ``weight_hh``, ``bias_ih``,
``bias_hh``), so a state dict moves between these cells and ``torch.nn.RNNCell`` /
``torch.nn.LSTMCell`` unchanged; the tests check that both give the same outputs and gradients.
Gradients come from autograd (the notes derive them by hand: ``rnn_step_backward``,
``lstm_step_backward``).

Vanilla RNN (Elman 1990; CS231n assignment 3, ``rnn_step_forward``)::

    h_t = tanh(W_xh x_t + W_hh h_{t-1} + b)

LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000)::

    a = W_x x_t + W_h h_{t-1} + b            (4H values: the gates' pre-activations)
    i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

The gates are stacked in PyTorch's order ``i, f, g, o`` (the notes stack ``i, f, o, g``; the order
is a convention of the weight layout, not of the model).
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["RNNCell", "LSTMCell", "make_cell", "CELLS"]

CELLS = ("rnn", "lstm")


class _Cell(nn.Module):
    gates = 1

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        g = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, input_size))
        self.weight_hh = nn.Parameter(torch.empty(g, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(g))
        self.bias_hh = nn.Parameter(torch.empty(g))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in ``[-1/√H, 1/√H]``, as ``torch.nn.RNNCell`` and ``LSTMCell`` do."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def preactivation(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``x W_xhᵀ + h W_hhᵀ + b`` for a batch (``N x D``, ``N x H`` -> ``N x gates·H``)."""
        return x @ self.weight_ih.t() + self.bias_ih + h @ self.weight_hh.t() + self.bias_hh


class RNNCell(_Cell):
    """One vanilla-RNN step: ``h_t = tanh(W_xh x_t + W_hh h_{t-1} + b)``. State: ``h``."""

    gates = 1

    def initial_state(self, h0: torch.Tensor) -> torch.Tensor:
        return h0

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, h_{t-1}) -> (h_t, new state)``; for this cell the state is ``h_t`` itself."""
        h_next = torch.tanh(self.preactivation(x, h))
        return h_next, h_next


class LSTMCell(_Cell):
    """One LSTM step (see the module docstring). State: ``(h, c)``; ``c_0 = 0``."""

    gates = 4

    def initial_state(self, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return h0, torch.zeros_like(h0)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``(x_t, (h_{t-1}, c_{t-1})) -> (h_t, (h_t, c_t))``."""
        h, c = state
        a = self.preactivation(x, h)
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        c_next = f * c + i * g
        h_next = o * torch.tanh(c_next)
        return h_next, (h_next, c_next)


def make_cell(kind: str, input_size: int, hidden_size: int) -> RNNCell | LSTMCell:
    """``"rnn"`` or ``"lstm"`` -> the cell."""
    from ..errors import PreimageError, did_you_mean

    if kind == "rnn":
        return RNNCell(input_size, hidden_size)
    if kind == "lstm":
        return LSTMCell(input_size, hidden_size)
    raise PreimageError(f"unknown cell {kind!r}" + did_you_mean(kind, CELLS) + "; choose rnn or lstm")
