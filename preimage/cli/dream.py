"""``preimage dream --class C [--preset fourier|classic]``: class visualization;
``preimage dream --objective EXPR [--batch N --diversity W]`` / ``--direction LAYER SOURCE...``:
feature visualization of channels, neurons and directions (preimage.tasks.featviz; cli/_featviz.py)."""
from __future__ import annotations

import argparse

from .common import (add_model_args, float_list, add_output_args, add_run_args, check_memory, model_from_args, nonneg_float,
                     nonneg_int, positive_float, positive_int, say)
from ._deepdream import add_deepdream_args, check_no_deepdream_args, run_deepdream


def add_parser(sub) -> None:
    p = sub.add_parser(
        "dream", help="class and feature visualization (classes, channels, neurons, directions); DeepDream on a photo",
        description="Class visualization (Simonyan et al. 2014; Yosinski et al. 2015; Olah et al. 2017): "
                    "gradient ascent from noise on a class score with jitter (and, in the classic preset, "
                    "L2 decay and periodic blur; in the fourier preset, a decorrelated Fourier "
                    "parameterization). Writes NNNN_NAME.png per class (NNNN: the class index in four digits, NAME: "
                    "the class name in lower case with _ for other characters, e.g. 0076_tarantula.png), "
                    "dream_grid.png and dream.json, and "
                    "prints the probability of the class for the saved 8-bit PNG. Exit code 1 when a class "
                    "is not the top-1 class of its saved PNG (the images are saved all the same). "
                    "With --objective/--direction instead of --class: feature visualization (Olah et al. "
                    "2017) of channels, neurons and directions of any layer, with the Fourier "
                    "parameterization and random pad, jitter, scale and rotation each step; writes one PNG "
                    "per image, dream_grid.png and dream.json with the objective's value on each saved PNG. "
                    "With --image and --layer: DeepDream on a photo (NAME_dream.png, NAME.png: the photo "
                    "at the size dreamt on, NAME_compare.png, deepdream.json).")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--class", "-c", dest="target", action="append", metavar="C",
                      help="class index or name (fuzzy); repeat for several classes (one batch)")
    what.add_argument("--objective", "-O", metavar="EXPR",
                      help="units to maximize: 'blocks.5:12' (channel, spatial mean), 'blocks.5:12@3,4' (neuron at "
                           "row 3, column 4), 'blocks.5:12 - 0.5*blocks.5:40', 'logits:130' or 'logits:tarantula' "
                           "(class logit); may be combined with --direction (summed)")
    p.add_argument("--direction", nargs="+", metavar=("LAYER", "SOURCE"), default=None,
                   help="maximize a direction of LAYER's channel space: LAYER FILE.npy|FILE.pt (a vector of one "
                        "value per channel) or LAYER IMAGE_A IMAGE_B (the mean activation of B minus A's)")
    f = p.add_argument_group("feature visualization (--objective / --direction)")
    f.add_argument("--batch", type=positive_int, default=1, help="images of the objective (one batch; default: 1)")
    f.add_argument("--diversity", type=nonneg_float, default=None,
                   help="weight of the diversity term (Olah et al. 2017: similarity of the images' Gram matrices, "
                        "relative to the objective's size); 1 gives different facets with --batch 4 (default: 0)")
    f.add_argument("--diversity-layer", dest="diversity_layer", default=None, metavar="LAYER",
                   help="layer whose Gram matrices are compared (default: the objective's first layer)")
    f.add_argument("--pad", type=nonneg_int, default=None, help="grey border added each step, pixels (default: 0)")
    f.add_argument("--rotate", type=nonneg_float, default=None,
                   help="random rotation each step, ±degrees (default: 5)")
    f.add_argument("--scales", type=float_list, default=None, metavar="S,S,...",
                   help="random rescaling factors each step, e.g. 0.9,1,1.1; 1 for none (default: 0.9,0.95,1,1.05,1.1)")
    f.add_argument("--polish", type=float, default=None, metavar="F",
                   help="the last fraction F of the steps sees the image without transforms, in [0, 1) "
                        "(default: 0.05)")
    p.add_argument("--preset", choices=("fourier", "classic"), default=None,
                   help="fourier: Fourier/decorrelated colour, Adam (default); classic: CS231n pixels, "
                        "l2 1e-3, lr 25, blur every 10, jitter 16 (--class only)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="gradient steps (default: the preset's; 256 with --objective)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="step size (default: the preset's; Adam 0.05 with --objective)")
    p.add_argument("--size", type=positive_int, default=None, help="image side (default: the model's input size)")
    a = p.add_argument_group("augmentation (override the preset)")
    a.add_argument("--jitter", type=nonneg_int, default=None,
                   help="random roll of up to this many pixels per step (default: 16)")
    a.add_argument("--copies", type=positive_int, default=None,
                   help="augmentation ensembling (Ghiasi et al. 2022, for ViTs): copies of each image per step, "
                        "each jittered, colour-shifted and noised on its own; the loss is their mean (default: 1)")
    a.add_argument("--color-shift", dest="color_shift", type=nonneg_float, default=None,
                   help="per-copy colour shift x*exp(U(-s,s)) + U(-s,s), normalized input units (default: 0, off)")
    a.add_argument("--noise", type=nonneg_float, default=None,
                   help="per-copy Gaussian noise std, normalized input units (default: 0, off)")
    add_deepdream_args(p)
    add_model_args(p)
    add_output_args(p, "out/dream")
    add_run_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import PreimageError

    if args.image:
        if args.objective is not None or args.direction is not None:
            raise PreimageError("--objective/--direction and --image do not go together (feature visualization "
                                "or DeepDream on a photo)")
        return run_deepdream(args)
    check_no_deepdream_args(args)
    if args.target is None:
        if args.objective is None and args.direction is None:
            raise PreimageError("give --class C, --objective EXPR, --direction LAYER SOURCE, or --image IMAGE "
                                "--layer L (DeepDream)")
        from ._featviz import run_objective

        return run_objective(args)
    from ._featviz import FEATVIZ_ONLY

    given = [flag for flag, dest in FEATVIZ_ONLY.items() if getattr(args, dest) not in (None, 1)]
    if given:
        raise PreimageError(f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with --objective or --direction, not --class")
    args.preset = args.preset or "fourier"
    if args.size is not None and args.size < 16:
        from ..errors import PreimageError

        raise PreimageError(f"--size {args.size} is too small (at least 16 pixels)")
    from ..io import check_outputs
    from ..tasks.classviz import make_config, output_paths, stems, visualize_class

    augment = dict(jitter=args.jitter, copies=args.copies, color_shift=args.color_shift, noise=args.noise)
    make_config(args.preset, steps=args.steps, lr=args.lr, **augment)  # bad settings fail before the model loads
    model = model_from_args(args)
    if model.classes is None:
        from ..errors import PreimageError

        raise PreimageError(f"{model.name} is not a classifier; class visualization needs class scores")
    names = stems(model, args.target)  # unknown classes fail here, with a suggestion
    check_outputs(output_paths(args.out, names), args.force)
    size = args.size or model.input_size
    check_memory(model, batch=len(names), size=size, what=f"class visualization of {len(names)} image(s) at "
                 f"{size} px", hint="use a smaller --size")
    result = visualize_class(model, args.target, preset=args.preset, size=args.size, seed=args.seed,
                             progress=not args.quiet, steps=args.steps, lr=args.lr, **augment)
    result.save(args.out, force=args.force)
    ok = True
    for c, cn, p, t in zip(result.classes, result.class_names, result.prob, result.top1):
        top = "" if t == c else f"; top-1 is {t} {model.classes[t]}"
        print(f"{c} {cn}: p={p:.3f} for the saved PNG{top}")
        ok = ok and t == c
    say(args, f"wrote {args.out}/dream_grid.png, dream.json and {len(names)} image(s)")
    return 0 if ok else 1
