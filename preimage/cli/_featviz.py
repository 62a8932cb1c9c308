"""``preimage dream --objective EXPR`` / ``--direction LAYER SOURCE...``: the feature-visualization half of
the dream command (argument checks, dispatch, printing). Not a command of its own (the leading
underscore keeps it out of the command list); torch loads inside :func:`run_objective` only."""
from __future__ import annotations

import argparse
import os

from ..errors import PreimageError
from .common import check_images, check_memory, model_from_args, say

#: flags of feature visualization that --class does not take -> their argparse dest
FEATVIZ_ONLY = {"--batch": "batch", "--diversity": "diversity", "--diversity-layer": "diversity_layer",
                "--pad": "pad", "--rotate": "rotate", "--scales": "scales", "--direction": "direction",
                "--polish": "polish"}
#: flags of class visualization that feature visualization does not take
CLASS_ONLY = {"--preset": "preset", "--copies": "copies", "--color-shift": "color_shift", "--noise": "noise"}
_VECTOR_SUFFIXES = (".npy", ".pt", ".pth")


def _check_direction(spec: list[str]) -> None:
    if len(spec) not in (2, 3):
        raise PreimageError("--direction takes LAYER FILE (.npy/.pt) or LAYER IMAGE_A IMAGE_B, "
                            f"not {len(spec)} value(s)")
    if len(spec) == 2:
        path = spec[1]
        if not path.lower().endswith(_VECTOR_SUFFIXES):
            raise PreimageError(f"--direction {spec[0]} {path}: a vector file is .npy or .pt "
                                "(for two images give LAYER IMAGE_A IMAGE_B)")
        if not os.path.isfile(path):
            raise PreimageError(f"direction file {path} not found")
        if not os.access(path, os.R_OK):
            raise PreimageError(f"cannot read direction file {path}")
    else:
        check_images(spec[1:])


def _labels(args: argparse.Namespace) -> str:
    from ..expr import describe, parse_terms

    parts = []
    if args.objective is not None:
        parts.append(describe(parse_terms(args.objective)))  # syntax errors name their column here
    if args.direction:
        parts.append(f"direction[{args.direction[0]}]")
    return " + ".join(parts)


def run_objective(args: argparse.Namespace) -> int:
    """Check everything that can be checked without the model, load it, check the units against it at
    the chosen size (one dry forward), optimize, save and print each image's value."""
    given = [flag for flag, dest in CLASS_ONLY.items() if getattr(args, dest, None) is not None]
    if given:
        raise PreimageError(f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with --class, not --objective/--direction")
    if args.size is not None and args.size < 16:
        raise PreimageError(f"--size {args.size} is too small (at least 16 pixels)")
    label = _labels(args)
    if args.direction:
        _check_direction(args.direction)
    from ..io import check_outputs
    from ..tasks.featviz import make_config, output_paths

    overrides = dict(steps=args.steps, lr=args.lr, jitter=args.jitter, pad=args.pad, rotate=args.rotate,
                     scales=args.scales, diversity=args.diversity, diversity_layer=args.diversity_layer,
                     polish=args.polish)
    cfg = make_config(**overrides)  # bad settings fail before the model loads
    check_outputs(output_paths(args.out, [label] * args.batch), args.force)

    model = model_from_args(args)
    size = int(args.size or model.input_size)
    objective = _build(args, model, size)
    if args.diversity_layer:
        from ..layers import resolve_layer

        resolve_layer(model, args.diversity_layer)
    check_memory(model, batch=args.batch, size=size + 2 * cfg.pad,
                 what=f"feature visualization of {args.batch} image(s) at {size} px", hint="use a smaller --size or --batch")
    from ..tasks.featviz import visualize_objective

    result = visualize_objective(model, objective, batch=args.batch, size=size, seed=args.seed,
                                 labels=[label] * args.batch, progress=not args.quiet, **overrides)
    result.save(args.out, force=args.force)
    for stem, value, units in zip(result.stems, result.values, result.terms):
        detail = "" if len(units) < 2 else " (" + ", ".join(f"{k} = {v:.4g}" for k, v in units.items()) + ")"
        print(f"{stem}.png: {label} = {value:.4g} on the saved PNG{detail}")
    say(args, f"wrote {args.out}/dream_grid.png, dream.json and {args.batch} image(s)")
    return 0


def _build(args: argparse.Namespace, model, size: int):
    """The objective of --objective and --direction, checked against the model at ``size`` px."""
    from ..expr import _maps_shape, check, objective_of, parse_terms, unit_shapes

    objective = None
    if args.objective is not None:
        terms, shapes = check(parse_terms(args.objective), model, size)
        objective = objective_of(terms, shapes)
    if args.direction:
        from ..objectives import direction
        from ..tasks.featviz import direction_from_images, load_direction

        layer = args.direction[0]
        shape = unit_shapes(model, [layer], size)[layer]  # an unknown layer fails here (did-you-mean)
        channels = _maps_shape(shape)[0]
        if len(args.direction) == 2:
            vector = load_direction(args.direction[1])
        else:
            vector = direction_from_images(model, layer, args.direction[1], args.direction[2], size=size)
        if vector.numel() != channels:
            raise PreimageError(f"the direction has {vector.numel()} values but {layer} has {channels} channels")
        d = direction(layer, vector, name=f"direction[{layer}]")
        objective = d if objective is None else objective + d
    return objective

