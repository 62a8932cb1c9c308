"""The files of a dream (class and feature visualization): ``STEM.png`` per image, a labelled
``dream_grid.png`` and the manifest ``dream.json``."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..io import all_or_nothing

__all__ = ["dream_paths", "save_dream"]


def dream_paths(out_dir: str | os.PathLike, stems: Sequence[str]) -> list[Path]:
    """Every file :func:`save_dream` writes for images named ``stems``."""
    out = Path(out_dir)
    return [out / f"{n}.png" for n in stems] + [out / "dream_grid.png", out / "dream.json"]


@all_or_nothing()
def save_dream(out_dir: str | os.PathLike, stems: Sequence[str], image: torch.Tensor, grid_labels: Sequence[str],
               ncols: int, manifest: dict[str, Any], *, force: bool = False) -> list[Path]:
    """Write the images (``B x 3 x H x W``, one per stem), their grid with ``grid_labels`` in at most
    ``ncols`` columns, and ``manifest`` with the package versions; nothing is written when any of the
    files exists, unless ``force``."""
    from ..images import save_image
    from ..io import check_outputs, versions, write_json
    from ..viz import grid

    out = Path(out_dir)
    check_outputs(dream_paths(out, stems), force)
    written = [save_image(image[i], out / f"{n}.png") for i, n in enumerate(stems)]
    written.append(save_image(grid(list(image), labels=list(grid_labels), ncols=min(ncols, len(grid_labels))),
                              out / "dream_grid.png"))
    written.append(write_json(out / "dream.json", {**manifest, "versions": versions()}))
    return written
