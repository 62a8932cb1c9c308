"""The learned-start regression of benchmarks/invert_colour.py: its cell bookkeeping round-trips."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from invert_colour import _design, _solve, predict_start  # noqa: E402


def test_design_targets_are_the_cells_under_each_position():
    images = torch.rand(2, 3, 32, 32)
    feats = torch.rand(2, 5, 4, 4)
    x, y = _design(feats, images, cells=2)
    assert x.shape == (2 * 16, 5) and y.shape == (2 * 16, 12)
    coarse = F.interpolate(images, size=(8, 8), mode="area")
    # position (i, j) of image 1 holds the 2 x 2 cells coarse[1, :, 2i:2i+2, 2j:2j+2]
    i, j = 2, 3
    row = y[16 + i * 4 + j].reshape(3, 2, 2).float()
    assert torch.allclose(row, coarse[1, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2], atol=1e-6)


def test_a_linear_world_is_recovered():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16)
    coarse = F.interpolate(images, size=(4, 4), mode="area")
    mix = torch.randn(3, 3)
    feats = torch.einsum("dc,bchw->bdhw", mix, coarse)  # features: an invertible colour mix of each cell
    x, y = _design(feats, images, cells=1)
    mu, sd = x.mean(0), x.std(0)
    xs = (x - mu) / sd
    ym = y.mean(0)
    fit = {"mu": mu, "sd": sd, "w": _solve(xs, y - ym, 1e-9), "ym": ym, "cells": 1}
    pred = predict_start(fit, feats)  # bilinearly resized to the benchmark's size
    want = F.interpolate(coarse, size=pred.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.allclose(pred, want.clamp(0, 1), atol=1e-4)
