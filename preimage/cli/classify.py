"""``preimage classify IMAGE... [--model M] [--top K]``: top-k classes with probabilities."""
from __future__ import annotations

import argparse

from ..errors import PreimageError
from .common import add_model_args, check_images, model_from_args, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="print the top-k classes of images",
                       description="Print the top-k ImageNet classes of each image with their probabilities.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file or sample:NAME (e.g. sample:coffee)")
    p.add_argument("--top", "-k", type=positive_int, default=5, help="how many classes (default: 5)")
    add_model_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_images(args.images)  # before torch and the model load
    import torch

    from ..images import load_tensor
    from ..tasks.classify import classify

    model = model_from_args(args)
    if model.classes is None:
        raise PreimageError(f"{model.name} is not a classifier")
    pixels = torch.cat([load_tensor(src, model.input_size, channels=model.channels) for src in args.images])
    results = classify(model, pixels, top=args.top)
    for src, rows in zip(args.images, results):
        if len(args.images) > 1:
            print(f"{src}:")
        for idx, name, p in rows:
            print(f"{p:7.2%}  {idx:4d}  {name}")
    return 0
