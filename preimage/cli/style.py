"""``preimage style CONTENT STYLE... [--preset P] [--style-weight W] ...``: neural style transfer.

Gatys et al. (CVPR 2016) on the engine; see :mod:`preimage.tasks.style`. ``--style-weight 0`` gives
feature inversion of the content photo, ``--content-weight 0 --init noise`` texture synthesis.
Writes ``CONTENT_STYLE.png``, ``CONTENT_STYLE_triptych.png`` (content | style | result) and
``CONTENT_STYLE.json`` (settings and per-term losses) to ``--out``.
"""
from __future__ import annotations

import argparse

from ..errors import PreimageError
from .common import (add_model_args, add_output_args, add_run_args, check_images, check_memory, model_from_args,
                     nonneg_float, positive_float, positive_int, progress_enabled, say)


def _blend(text: str) -> list[float]:
    out = []
    for part in text.split(","):
        out.append(nonneg_float(part.strip()))
    return out


#: the names of preimage.tasks.style.STYLE_PRESETS (listed here so --help does not import torch; tested)
STYLE_PRESETS = ("efficientnet", "classic", "vgg")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "style", help="paint a photo in the style of other images (Gatys et al. 2016)",
        description="Neural style transfer: match the content photo's activations at one layer and the "
                    "style images' Gram matrices at several layers. --style-weight 0 is feature inversion, "
                    "--content-weight 0 --init noise is texture synthesis.",
        epilog="examples: preimage style sample:chelsea painting.jpg | "
               "preimage style sample:coffee sample:brick sample:grass --style-blend 0.7,0.3 | "
               "preimage style photo.jpg painting.jpg -m squeezenet1_1 --weights sq.pth --preset classic",
    )
    p.add_argument("content", metavar="CONTENT", help="content image: a file or sample:NAME")
    p.add_argument("styles", nargs="+", metavar="STYLE", help="style image(s): files or sample:NAME")
    g = p.add_argument_group("objective")
    g.add_argument("--preset", default="auto", choices=["auto", *STYLE_PRESETS],
                   help="settings to start from (default: auto, the model's own: efficientnet_lite* -> "
                        "efficientnet, squeezenet* -> classic, vgg* -> vgg)")
    g.add_argument("--content-layer", help="layer that keeps the content (e.g. blocks.3, features.3, relu4_2)")
    g.add_argument("--content-weight", type=nonneg_float, help="w_c (0: texture synthesis)")
    g.add_argument("--style-layers", metavar="SPEC",
                   help="style layers with weights, e.g. 'features.1:300000+features.4:1000' (a layer without "
                        ":W weighs 1)")
    g.add_argument("--style-weight", type=nonneg_float, help="multiplies every style layer weight (0: feature inversion)")
    g.add_argument("--style-blend", type=_blend, metavar="W1,W2,...", help="one weight per style image (default: equal)")
    g.add_argument("--tv-weight", type=nonneg_float, help="weight of the total variation of the network input")
    g.add_argument("--gram-normalize", choices=["chw", "hw", "none"], help="divide Gram matrices by C*H*W, H*W or nothing")
    g.add_argument("--preserve-color", "--preserve-colour", dest="preserve_color", action="store_true", default=None,
                   help="transfer luminance only and keep the content's colours")
    g = p.add_argument_group("images")
    g.add_argument("--image-size", type=positive_int, help="short side of the content (and result) in pixels")
    g.add_argument("--style-size", type=positive_int, help="short side of each style image in pixels")
    g.add_argument("--init", choices=["content", "noise"], help="start from the content photo or from noise")
    g = p.add_argument_group("optimization")
    g.add_argument("--steps", type=positive_int, help="optimization steps")
    g.add_argument("--optimizer", choices=["adam", "lbfgs", "sgd"], help="optimizer")
    g.add_argument("--lr", type=positive_float, help="learning rate")
    g.add_argument("--lr-drop-step", type=positive_int, help="after this step the learning rate becomes --lr-drop-to")
    g.add_argument("--lr-drop-to", type=positive_float, help="the learning rate after --lr-drop-step")
    add_model_args(p)
    for action in p._actions:  # the shared model flag does not size anything here
        if action.dest == "input_size":
            action.help = ("the model's input size (only an ONNX graph with a non-square input needs it); "
                           "the images are sized by --image-size and --style-size")
    add_output_args(p, "out/style")
    add_run_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.style_blend is not None and len(args.style_blend) != len(args.styles):
        raise PreimageError(f"{len(args.styles)} style images but {len(args.style_blend)} --style-blend weights")
    # bad images fail here, before torch and the model load and before any output is checked
    check_images([args.content, *args.styles])
    from ..images import image_name
    from ..tasks.style import output_name, parse_style_layers, preset_for, style_config, stylize

    overrides = {k: getattr(args, k) for k in (
        "content_layer", "content_weight", "style_weight", "tv_weight", "gram_normalize", "preserve_color",
        "image_size", "style_size", "init", "steps", "optimizer", "lr", "lr_drop_step", "lr_drop_to")}
    if args.style_layers is not None:
        layers, weights = parse_style_layers(args.style_layers)
        overrides.update(style_layers=layers, style_layer_weights=weights)
    name = output_name(image_name(args.content), [image_name(s) for s in args.styles])
    from pathlib import Path

    from ..io import check_outputs

    out = Path(args.out)
    check_outputs([out / f"{name}.png", out / f"{name}_triptych.png", out / f"{name}.json"], args.force)
    model = model_from_args(args)
    if args.preset == "auto" and preset_for(model.name) is None and (args.content_layer is None or args.style_layers is None):
        raise PreimageError(f"no style preset for {model.name}: give --content-layer and --style-layers, or --preset")
    sized = style_config(preset_for(model.name) or "efficientnet" if args.preset == "auto" else args.preset,
                         image_size=args.image_size, style_size=args.style_size)
    check_memory(model, batch=1, size=max(sized.image_size, sized.style_size), what=f"style transfer at "
                 f"{sized.image_size} px", hint="use a smaller --image-size or --style-size")
    result = stylize(model, args.content, args.styles, preset=args.preset, style_blend=args.style_blend,
                     progress=progress_enabled(args), seed=args.seed, **overrides)
    paths = result.save(out, force=True)
    losses = ", ".join(f"{k} {v['start']:.3g} -> {v['end']:.3g}" for k, v in result.losses.items() if k != "style_layers")
    say(args, f"{result.status} after {result.result.steps} steps ({result.result.seconds:.1f} s): {losses}")
    for p in paths:
        print(p)
    if result.status == "interrupted":
        say(args, "interrupted: saved the image as it was")
        return 130
    if result.status == "diverged":
        say(args, result.result.message)
        return 1
    return 0
