"""Classification: the proof that a model's weights and preprocessing are right."""
from __future__ import annotations

import torch

from ..models import Model

__all__ = ["classify", "predict"]


@torch.no_grad()
def predict(model: Model, pixels: torch.Tensor) -> torch.Tensor:
    """Class probabilities (softmax of the logits) for a batch of [0, 1] RGB images."""
    return model(pixels.to(model.device)).float().softmax(-1)


def classify(model: Model, pixels: torch.Tensor, top: int = 5) -> list[list[tuple[int, str, float]]]:
    """Top-``top`` (index, name, probability) per image."""
    probs = predict(model, pixels)
    k = min(top, probs.shape[-1])
    values, indices = probs.topk(k, dim=-1)
    names = model.classes or tuple(str(i) for i in range(probs.shape[-1]))
    return [
        [(int(i), names[int(i)], float(v)) for v, i in zip(vs, ids)]
        for vs, ids in zip(values, indices)
    ]
