"""Named defaults that the CLI and the web app share, kept free of heavy imports: the sweep studies
(``preimage sweep --recipe NAME``, described in one line each; :mod:`preimage.sweep` builds their
axes) and the layer each bundled model inverts when none is given.
"""
from __future__ import annotations

__all__ = ["RECIPES", "DEFAULT_LAYERS", "INVERT_PRESET_NAMES", "ORIGINAL_SEED"]

#: the inversion presets, in the order the help lists them (the keys of
#: ``preimage.tasks.invert.INVERT_PRESETS``, which imports torch; a test keeps the two equal)
INVERT_PRESET_NAMES = ("default", "pixels", "recognisable", "fast", "natural", "original", "shallow")

#: the original script's random seed (the ``original`` preset's default)
ORIGINAL_SEED = 2023

#: the layer inverted when none is given (``preimage invert``, ``preimage serve``)
DEFAULT_LAYERS = {"efficientnet_lite0": "blocks.3", "efficientnet_lite1": "blocks.3",
                  "efficientnet_lite2": "blocks.3", "alexnet": "conv3", "hog": "hog", "dsift": "dsift"}

#: name -> one-line description (shown by ``preimage sweep --help``)
RECIPES = {
    "depth": "what each layer remembers: shallow, middle, deep and a middle+deep combination",
    "tv": "the TV prior's weight at 0, the preset's default and 10x",
    "lr": "Adam at lr 0.001 vs 0.01 for 1000 steps in the normalized input space (the 'original' preset)",
    "models": "the same photo through several models (embedded EfficientNet-Lite 0/1/2, HOG, dense SIFT, "
              "and torchvision ResNet-18 / VGG16 when their weights are cached)",
}
