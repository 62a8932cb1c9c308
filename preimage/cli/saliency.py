"""``preimage saliency IMAGE... [--class C] [--method vanilla,smoothgrad,gradxinput,gradcam,gradcam++,
guided-backprop,guided-gradcam,ig,occlusion,rollout|all]``."""
from __future__ import annotations

import argparse

from .common import (add_model_args, add_output_args, add_run_args, check_images, check_memory, model_from_args,
                     nonneg_float, positive_float, positive_int, say)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "saliency", help="saliency maps: which pixels the class score depends on",
        description="Gradient saliency maps (Simonyan et al. 2014), SmoothGrad and gradient x input; Grad-CAM "
                    "(Selvaraju et al. 2017) and Grad-CAM++ on any layer with a spatial map, guided backprop "
                    "(Springenberg et al. 2015) and guided Grad-CAM, Integrated Gradients (Sundararajan et al. "
                    "2017, completeness gap printed), occlusion (Zeiler & Fergus 2014); for Vision Transformers "
                    "attention rollout (Abnar & Zuidema 2020). Batched over images. Writes a heatmap and an "
                    "overlay per image and method, a grid of all, and saliency.json.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file or sample:NAME (e.g. sample:chelsea)")
    p.add_argument("--class", "-c", dest="target", action="append", default=None, metavar="C",
                   help="class index or name to explain (default: the predicted class); give it once for "
                        "all images or once per image")
    p.add_argument("--method", default="vanilla",
                   help="vanilla, smoothgrad, gradxinput, gradcam, gradcam++, guided-backprop, guided-gradcam, "
                        "ig, occlusion, rollout (Vision Transformers: attention rollout, class-independent), a "
                        "comma-separated list, or all (every method the model can run: rollout on Vision "
                        "Transformers only, the guided methods on ReLU networks; default: vanilla)")
    p.add_argument("--samples", type=positive_int, default=25, help="SmoothGrad noisy copies (default: 25)")
    p.add_argument("--noise", type=nonneg_float, default=0.15,
                   help="SmoothGrad noise std in [0, 1] pixel units (default: 0.15)")
    p.add_argument("--layer", default=None,
                   help="Grad-CAM layer, as `preimage layers MODEL` prints it (default: the last layer with a "
                        "spatial map, e.g. bn2 on efficientnet_lite0)")
    p.add_argument("--steps", type=int, default=32,
                   help="Integrated Gradients: quadrature steps (default: 32)")
    p.add_argument("--baseline", default="black",
                   help="Integrated Gradients baseline: black, blur or noise (uniform, from --seed; default: black)")
    p.add_argument("--ig-rule", dest="rule", default="gausslegendre",
                   help="Integrated Gradients quadrature: gausslegendre (default) or riemann (right sum)")
    p.add_argument("--blur-sigma", type=positive_float, default=10.0,
                   help="std of the blurred IG baseline, in pixels of the network input (default: 10)")
    p.add_argument("--window", type=int, default=None,
                   help="occlusion: square side in pixels (default: 1/7 of the input side, 32 at 224)")
    p.add_argument("--stride", type=int, default=None, help="occlusion: step in pixels (default: half the window)")
    p.add_argument("--fill", type=float, default=0.5,
                   help="occlusion: grey level of the square in [0, 1] (default: 0.5)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per forward/backward pass (noisy copies, IG steps and occluded copies count; "
                        "default: 32)")
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
    from ..models.efficientnet_lite import VARIANTS
    from ..tasks.attribution import AttributionConfig, check_config
    from ..tasks.saliency import methods_for, output_paths, parse_methods, saliency, unique_names
    from ..viz import heatmap

    import torch

    heatmap(torch.zeros(1, 1), cmap=args.cmap)  # unknown colormaps fail before any work
    methods = parse_methods("all" if args.method.strip() == "all" else [m.strip() for m in args.method.split(",") if m.strip()])
    cfg = AttributionConfig(layer=args.layer, steps=args.steps, rule=args.rule, baseline=args.baseline,
                            blur_sigma=args.blur_sigma, window=args.window, stride=args.stride, fill=args.fill,
                            seed=args.seed, batch_size=args.batch_size)
    known = args.input_size or (VARIANTS[args.model][2] if args.model in VARIANTS else None)
    check_config(cfg, methods, size=known)  # IG steps, baselines, occlusion window: before the model loads
    names = unique_names([image_name(s) for s in args.images])
    every = args.method.strip() == "all"
    if not every:  # "all" depends on the model: its files are checked once it has loaded
        check_outputs(output_paths(args.out, names, methods), args.force)
    model = model_from_args(args)
    if every:
        methods = methods_for(model, "all", args.layer)
        check_outputs(output_paths(args.out, names, methods), args.force)
    check_config(cfg, methods, size=model.input_size)  # saliency() checks the Grad-CAM layer before any work
    if args.layer is not None:  # a misspelt layer fails even when no chosen method reads it
        from ..layers import resolve_layer

        resolve_layer(model, args.layer)
    per_image = max([1] + [args.samples for m in methods if m == "smoothgrad"] + [args.steps for m in methods if m == "ig"]
                    + [64 for m in methods if m == "occlusion"])
    batch = min(args.batch_size, len(args.images) * per_image)
    check_memory(model, batch=batch, size=model.input_size, what=f"saliency in batches of {batch}",
                 hint="use a smaller --batch-size")
    target = None if targets is None else (targets[0] if len(targets) == 1 else targets)
    result = saliency(model, args.images, target=target, method=methods, samples=args.samples, noise=args.noise,
                      seed=args.seed, batch_size=args.batch_size, names=names, layer=args.layer, steps=args.steps,
                      baseline=args.baseline, rule=args.rule, blur_sigma=args.blur_sigma, window=args.window,
                      stride=args.stride, fill=args.fill)
    result.save(args.out, force=args.force, cmap=args.cmap)
    for i, (name, cn, c, p) in enumerate(zip(result.names, result.class_names, result.classes, result.probs)):
        label = f"class {c}" if cn == f"class {c}" else f"class {c} {cn}"  # a model without class names
        line = f"{name}: {label} (p={p:.3f})"
        if result.completeness:
            ig = result.completeness[i]
            line += (f"; IG completeness gap {ig['gap']:+.4g} (sum {ig['sum']:.4g} vs S(x)-S(x') {ig['delta']:.4g}, "
                     f"{ig['relative_gap']:.1%})")
        print(line)
    say(args, f"wrote {args.out}/saliency_grid.png and {len(result.names)} image(s) x {len(result.maps)} method(s)")
    return 0
