"""``preimage fool IMAGE... --target C | --untargeted [--mode l2|pgd]``: fooling images."""
from __future__ import annotations

import argparse

from .common import (add_model_args, add_output_args, add_run_args, check_images, check_memory, model_from_args,
                     nonneg_float, positive_float, positive_int, say)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fool", help="fooling images: change a photo slightly until it is classified as another class",
        description="Fooling images (Szegedy et al. 2014): gradient steps on the target score, each of L2 "
                    "length --lr (or, with --mode pgd, sign steps inside an L-infinity ball), until the top-1 "
                    "class is the target. Saves the fooled 8-bit PNG, a magnified difference, a side-by-side "
                    "and fool.json, and checks that the saved PNG, decoded again, is still fooled. "
                    "Exit code 1 when an image was not fooled within --max-steps or its PNG is not.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file or sample:NAME (e.g. sample:chelsea)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--target", "-t", action="append", default=None, metavar="C",
                   help="target class: index, name (fuzzy), or 'random' (drawn with --seed); once for all "
                        "images or once per image")
    g.add_argument("--untargeted", action="store_true", help="only move away from the predicted class")
    p.add_argument("--mode", choices=("l2", "pgd"), default="l2",
                   help="l2: normalized gradient steps (default); pgd: L-infinity-bounded sign steps")
    p.add_argument("--lr", type=positive_float, default=25.0,
                   help="l2 mode: L2 length of one step in 8-bit pixel levels (default: 25)")
    p.add_argument("--max-steps", type=positive_int, default=100, help="iteration cap (default: 100)")
    p.add_argument("--epsilon", type=positive_float, default=8.0,
                   help="pgd mode: L-infinity radius in 8-bit levels, 1 to 255 (default: 8, i.e. 8/255)")
    p.add_argument("--step-size", type=positive_float, default=1.0,
                   help="pgd mode: step in 8-bit levels (default: 1)")
    p.add_argument("--no-quantize", dest="quantize", action="store_false",
                   help="optimize float pixels instead of the 8-bit image that is saved (the PNG check may then fail)")
    p.add_argument("--magnify", type=nonneg_float, default=None,
                   help="difference image factor (default: the largest change reaches black/white)")
    add_model_args(p)
    add_output_args(p, "out/fool")
    add_run_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import PreimageError

    from ..io import check_outputs
    from ..tasks.fool import check_pgd, fool, output_paths
    from ..tasks.saliency import unique_names

    if args.target is None and not args.untargeted:
        raise PreimageError("give a --target class (index, name or random) or --untargeted")
    if args.target is not None and len(args.target) not in (1, len(args.images)):
        raise PreimageError(f"give --target once, or once per image ({len(args.images)}), not {len(args.target)} times")
    if args.mode == "pgd":
        check_pgd(args.epsilon, args.step_size)
    check_images(args.images)  # before torch and the model load
    import torch

    from ..images import image_name
    names = unique_names([image_name(s) for s in args.images])
    check_outputs(output_paths(args.out, names), args.force)
    model = model_from_args(args)
    check_memory(model, batch=len(args.images), size=model.input_size, what=f"fooling {len(args.images)} image(s)",
                 hint="fool fewer images at once")
    target = None
    if args.target is not None:
        g = torch.Generator().manual_seed(args.seed)
        picked = [int(torch.randint(0, len(model.classes or ()) or 1, (1,), generator=g)) if t == "random" else t
                  for t in args.target]
        target = picked[0] if len(picked) == 1 else picked
    result = fool(model, args.images, target=target, mode=args.mode, lr=args.lr, max_steps=args.max_steps,
                  epsilon=args.epsilon, step_size=args.step_size, quantize=args.quantize,
                  progress=not args.quiet, names=names)
    result.save(args.out, force=args.force, magnify=args.magnify)
    failed = False
    for row in result.rows():
        goal = f"-> {row['target']} {row['target_name']}" if result.targeted else "(untargeted)"
        state = "fooled" if row["success"] else f"NOT fooled after {row['iterations']} steps"
        print(f"{row['name']}: {row['original_class']} {row['original_name']} {goal}: {state}; now "
              f"{row['final_class']} {row['final_name']} (p={row['confidence']:.3f}) after {row['iterations']} "
              f"iterations; change L2 {row['l2']:.1f}, Linf {row['linf']:.1f} (8-bit levels)")
        if row["success"] and not row["png_ok"]:
            print(f"{row['name']}: warning: the saved 8-bit PNG, decoded again, is classified as "
                  f"{row['png_class']} {row['png_name']}: rounding to 8 bits undid the attack "
                  "(drop --no-quantize to optimize the 8-bit image)")
        failed = failed or not row["success"] or not row["png_ok"]
    say(args, f"wrote {args.out}/fool.json and {len(names)} x (_fooled, _diff, _fool).png")
    return 1 if failed else 0
