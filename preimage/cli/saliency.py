"""``preimage saliency IMAGE... [--class C] [--method vanilla|smoothgrad|gradxinput|all]``."""
from __future__ import annotations

import argparse

from .common import (add_model_args, add_output_args, add_run_args, check_images, check_memory, model_from_args,
                     nonneg_float, positive_int, say)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "saliency", help="saliency maps: which pixels the class score depends on",
        description="Gradient saliency maps (Simonyan et al. 2014), SmoothGrad and gradient x input, "
                    "and, for Vision Transformers, attention rollout (Abnar & Zuidema 2020), "
                    "for one or several images in one batched pass. Writes a heatmap and an overlay per "
                    "image and method, a grid of all, and saliency.json.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file or sample:NAME (e.g. sample:chelsea)")
    p.add_argument("--class", "-c", dest="target", action="append", default=None, metavar="C",
                   help="class index or name to explain (default: the predicted class); give it once for "
                        "all images or once per image")
    p.add_argument("--method", default="vanilla",
                   help="vanilla, smoothgrad, gradxinput, rollout (Vision Transformers: attention rollout, "
                        "class-independent), a comma-separated list, or all (= the three gradient methods; "
                        "default: vanilla)")
    p.add_argument("--samples", type=positive_int, default=25, help="SmoothGrad noisy copies (default: 25)")
    p.add_argument("--noise", type=nonneg_float, default=0.15,
                   help="SmoothGrad noise std in [0, 1] pixel units (default: 0.15)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per forward/backward pass (default: 32)")
    p.add_argument("--cmap", default="inferno", help="matplotlib colormap (default: inferno)")
    add_model_args(p)
    add_output_args(p, "out/saliency")
    add_run_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import PreimageError

    targets = args.target
    if targets is not None and len(targets) not in (1, len(args.images)):
        raise PreimageError(f"give --class once, or once per image ({len(args.images)}), not {len(targets)} times")
    check_images(args.images)  # before torch and the model load
    from ..images import image_name
    from ..io import check_outputs
    from ..tasks.saliency import output_paths, parse_methods, saliency, unique_names
    from ..viz import heatmap

    import torch

    heatmap(torch.zeros(1, 1), cmap=args.cmap)  # unknown colormaps fail before any work
    methods = parse_methods("all" if args.method.strip() == "all" else [m.strip() for m in args.method.split(",") if m.strip()])
    names = unique_names([image_name(s) for s in args.images])
    check_outputs(output_paths(args.out, names, methods), args.force)
    model = model_from_args(args)
    batch = min(args.batch_size, len(args.images) * max(1, args.samples if "smoothgrad" in methods else 1))
    check_memory(model, batch=batch, size=model.input_size, what=f"saliency in batches of {batch}",
                 hint="use a smaller --batch-size")
    target = None if targets is None else (targets[0] if len(targets) == 1 else targets)
    result = saliency(model, args.images, target=target, method=methods, samples=args.samples, noise=args.noise,
                      seed=args.seed, batch_size=args.batch_size, names=names)
    result.save(args.out, force=args.force, cmap=args.cmap)
    for name, cn, c, p in zip(result.names, result.class_names, result.classes, result.probs):
        print(f"{name}: class {c} {cn} (p={p:.3f})")
    say(args, f"wrote {args.out}/saliency_grid.png and {len(result.names)} image(s) x {len(result.maps)} method(s)")
    return 0
