"""Classification: the proof that a model's weights and preprocessing are right."""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ..errors import PreimageError
from ..images import load_batch
from ..models import Model, check_model

__all__ = ["classify", "predict"]


@torch.no_grad()
def predict(model: Model, pixels: torch.Tensor) -> torch.Tensor:
    """Class probabilities (softmax of the logits) for a batch of [0, 1] RGB images."""
    return model(pixels.to(model.device)).float().softmax(-1)


def classify(model: Model, pixels: "torch.Tensor | str | os.PathLike | Sequence[str | os.PathLike]",
             top: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-``top`` (index, name, probability) per image, most probable first.

    Args:
        model: from :func:`preimage.load_model`.
        pixels: a ``B x 3 x H x W`` (or ``3 x H x W``) tensor in [0, 1], a Pillow image, a numpy
            array, or a path / ``sample:NAME`` / list of them (resized and center-cropped to the
            model's input size).
        top: how many classes per image (at most the number of classes).
    """
    check_model(model)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise PreimageError(f"top must be a positive whole number, not {top!r}")
    pixels = load_batch(pixels, model.input_size, channels=model.channels)[0]
    probs = predict(model, pixels)
    k = min(top, probs.shape[-1])
    values, indices = probs.topk(k, dim=-1)
    names = model.classes or tuple(str(i) for i in range(probs.shape[-1]))
    return [
        [(int(i), names[int(i)], float(v)) for v, i in zip(vs, ids)]
        for vs, ids in zip(values, indices)
    ]
