"""``preimage layers MODEL``: every addressable layer with its output shape."""
from __future__ import annotations

import argparse

from .common import add_model_args, check_model, model_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("layers", help="list the layers of a model",
                       description="List every addressable layer of a model (dotted module path, paper "
                                   "aliases, type and output shape at the model's input size).")
    p.add_argument("model_name", metavar="MODEL", nargs="?", help="model name (default: --model)")
    p.add_argument("--filter", "-f", default=None, help="show only layers whose name or alias contains this text")
    add_model_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.model_name:
        args.model = args.model_name
    check_model(args)  # a misspelt name or a missing file answers before torch loads
    from ..layers import list_layers

    model = model_from_args(args)
    rows = list_layers(model)
    if args.filter:
        rows = [r for r in rows if args.filter in r.name or any(args.filter in a for a in r.aliases)]
    print(f"{model.name}: {len(rows)} layer{'' if len(rows) == 1 else 's'} at {model.input_size}x{model.input_size} "
          f"(weights: {model.weights}; input: {model.normalization})")
    from ..models import vit

    layout = vit.token_layout(model.net)
    if layout is not None:
        gh, gw = vit.grid_size(model.net, model.input_size, model.input_size)
        prefix = ", ".join(f"{layout.names.count(k)} {k}" for k in dict.fromkeys(layout.names)) or "none"
        print(f"Vision Transformer: token layers shown as their {gh}x{gw} grid of patch tokens (channels x h x w); "
              f"prefix tokens ({prefix}) read as LAYER.cls / .dist / .reg, the raw sequence as LAYER.tokens")
    width = max([len(r.name) for r in rows] + [5])
    awidth = max([len(",".join(r.aliases)) for r in rows] + [5])
    print(f"{'layer':<{width}}  {'alias':<{awidth}}  {'type':<22}  shape")
    for r in rows:
        shape = "x".join(str(s) for s in r.shape)
        print(f"{r.name:<{width}}  {','.join(r.aliases):<{awidth}}  {r.kind:<22}  {shape}")
    return 0
