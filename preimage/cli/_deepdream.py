"""``preimage dream --image IMAGE --layer L``: DeepDream on a photo (the ``--image`` half of ``dream``).

Kept apart from :mod:`preimage.cli.dream` so that command's module stays small; the leading
underscore keeps it out of the command list. Nothing heavy is imported at module level.
"""
from __future__ import annotations

import argparse

from .common import check_images, check_memory, model_from_args, nonneg_int, positive_float, positive_int, say


def add_deepdream_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "DeepDream on a photo (Mordvintsev et al. 2015)",
        "--image with --layer instead of --class. --steps (per octave, default 10), --lr (mean step per "
        "pixel in [0, 1] units, default 1.5/255), --jitter (default 32) and --size (the photo's short side, "
        "default: as it is) apply too.")
    g.add_argument("--image", action="append", default=None, metavar="IMAGE",
                   help="a photo (file or sample:NAME) to dream on; repeat for several")
    g.add_argument("--layer", default=None, metavar="L",
                   help="the layer whose activations grow (`preimage layers MODEL`), e.g. blocks.4")
    g.add_argument("--channel", type=nonneg_int, default=None, metavar="K",
                   help="raise one channel of the layer only (default: every channel)")
    g.add_argument("--octaves", type=positive_int, default=None, help="image scales (default: 4)")
    g.add_argument("--octave-scale", dest="octave_scale", type=positive_float, default=None,
                   help="size ratio between octaves, >= 1 (default: 1.4)")
    g.add_argument("--dream-loss", dest="dream_loss", choices=("l2", "mean"), default=None,
                   help="l2: raise mean Φ², the activations' L2 norm (default); mean: raise mean Φ")


#: options that go with --image only: flag -> argparse dest
DEEPDREAM_ONLY = {"--layer": "layer", "--channel": "channel", "--octaves": "octaves", "--octave-scale": "octave_scale",
                  "--dream-loss": "dream_loss"}


def check_no_deepdream_args(args: argparse.Namespace) -> None:
    """Without --image, DeepDream's options would be ignored: refuse them in one line."""
    given = [flag for flag, dest in DEEPDREAM_ONLY.items() if getattr(args, dest, None) is not None]
    if given:
        from ..errors import PreimageError

        raise PreimageError(f"{given[0]} goes with --image (DeepDream on a photo)")


def run_deepdream(args: argparse.Namespace) -> int:
    from ..errors import PreimageError

    if getattr(args, "target", None):
        raise PreimageError("--class and --image do not go together (class visualization or DeepDream on a photo)")
    extra = [f for f, d in (("--copies", "copies"), ("--color-shift", "color_shift"), ("--noise", "noise"))
             if getattr(args, d, None) is not None]
    if extra:
        raise PreimageError(f"{extra[0]} is for class visualization (--class), not DeepDream (--image)")
    if not args.layer:
        raise PreimageError("--image needs --layer (the layer to amplify, e.g. --layer blocks.4)")
    if args.size is not None and args.size < 16:
        raise PreimageError(f"--size {args.size} is too small (at least 16 pixels)")
    if args.octave_scale is not None and args.octave_scale < 1:
        raise PreimageError(f"octave scale must be >= 1, not {args.octave_scale:g}")
    check_images(args.image)  # all of the above without torch: bad input answers at once
    from ..io import check_outputs
    from ..tasks.deepdream import deep_dream, dream_names, make_config, output_paths

    settings = dict(octaves=args.octaves, octave_scale=args.octave_scale, steps=args.steps, lr=args.lr,
                    jitter=args.jitter, loss=args.dream_loss, channel=args.channel)
    make_config(**settings)
    check_outputs(output_paths(args.out, dream_names(args.image)), args.force)
    model = model_from_args(args)
    from ..layers import FeatureExtractor

    FeatureExtractor(model, [args.layer])  # an unknown layer: one line with a did-you-mean
    if args.size is not None:
        check_memory(model, batch=1, size=args.size, what=f"DeepDream at {args.size} px", hint="use a smaller --size")
    result = deep_dream(model, args.image, layer=args.layer, size=args.size, seed=args.seed,
                        progress=not args.quiet, **settings)
    result.save(args.out, force=args.force)
    what = args.layer if args.channel is None else f"{args.layer} channel {args.channel}"
    for n, b, a in zip(result.names, result.before, result.after):
        print(f"{n}: ‖{what}‖ {b.norm:.4g} -> {a.norm:.4g} ({a.norm / b.norm if b.norm else float('nan'):.2f}x), "
              f"mean {b.mean:.4g} -> {a.mean:.4g}")
    if result.status == "interrupted":
        say(args, f"interrupted: wrote what was done to {args.out}")
        return 130
    say(args, f"wrote {args.out}/deepdream.json and {len(result.names)} dream(s) (NAME_dream.png, NAME.png, NAME_compare.png)")
    return 0
