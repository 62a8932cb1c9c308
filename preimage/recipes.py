"""The named sweep studies (``preimage sweep --recipe NAME``), described in one line each.

Kept apart from :mod:`preimage.sweep` (which builds their axes) so that ``preimage sweep --help``
lists them without importing torch.
"""
from __future__ import annotations

__all__ = ["RECIPES"]

#: name -> one-line description (shown by ``preimage sweep --help``)
RECIPES = {
    "depth": "what each layer remembers: shallow, middle, deep and a middle+deep combination",
    "tv": "the TV prior's weight at 0, the preset's default and 10x",
    "lr": "Adam at lr 0.001 vs 0.01 for 1000 steps in the normalized input space (the 'original' preset)",
    "models": "the same photo through several models (embedded EfficientNet-Lite 0/1/2, HOG, dense SIFT, "
              "and torchvision ResNet-18 / VGG16 when their weights are cached)",
}
