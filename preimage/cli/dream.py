"""``preimage dream --class C [--preset fourier|classic]``: class visualization."""
from __future__ import annotations

import argparse

from .common import (add_model_args, add_output_args, add_run_args, check_memory, model_from_args, nonneg_float,
                     nonneg_int, positive_float, positive_int, say)
from ._deepdream import add_deepdream_args, check_no_deepdream_args, run_deepdream


def add_parser(sub) -> None:
    p = sub.add_parser(
        "dream", help="class visualization (an image the network is sure shows a class); DeepDream on a photo",
        description="Class visualization (Simonyan et al. 2014; Yosinski et al. 2015; Olah et al. 2017): "
                    "gradient ascent from noise on a class score with jitter (and, in the classic preset, "
                    "L2 decay and periodic blur; in the fourier preset, a decorrelated Fourier "
                    "parameterization). Writes CLASS.png per class, dream_grid.png and dream.json, and "
                    "prints the probability of the class for the saved 8-bit PNG. Exit code 1 when a class "
                    "is not the top-1 class of its saved PNG (the images are saved all the same). With --image "
                    "and --layer instead: DeepDream on a photo (NAME_dream.png, NAME_compare.png, deepdream.json).")
    p.add_argument("--class", "-c", dest="target", action="append", default=None, metavar="C",
                   help="class index or name (fuzzy); repeat for several classes (one batch)")
    p.add_argument("--preset", choices=("fourier", "classic"), default="fourier",
                   help="fourier: Fourier/decorrelated colour, Adam (default); classic: CS231n pixels, "
                        "l2 1e-3, lr 25, blur every 10, jitter 16")
    p.add_argument("--steps", type=positive_int, default=None, help="gradient steps (default: the preset's)")
    p.add_argument("--lr", type=positive_float, default=None, help="step size (default: the preset's)")
    p.add_argument("--size", type=positive_int, default=None, help="image side (default: the model's input size)")
    a = p.add_argument_group("augmentation (override the preset)")
    a.add_argument("--jitter", type=nonneg_int, default=None, help="random roll of up to this many pixels per step")
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
    if args.image:
        return run_deepdream(args)
    check_no_deepdream_args(args)
    if not args.target:
        from ..errors import PreimageError

        raise PreimageError("give --class C (class visualization) or --image IMAGE --layer L (DeepDream)")
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
