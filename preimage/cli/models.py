"""``preimage models``: what the zoo offers and whether each model works offline."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list available models",
                       description="List the models preimage can load and whether their default weights "
                                   "are usable offline. Any timm model is also available as timm:NAME.")
    p.add_argument("--source", choices=["embedded", "shallow", "torchvision"], help="show one source only")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..models import list_models

    rows = [m for m in list_models() if args.source in (None, m.source)]
    width = max(len(m.name) for m in rows)
    print(f"{'name':<{width}}  {'source':<11}  {'size':>4}  {'offline':<7}  note")
    for m in rows:
        offline = "yes" if m.offline else "no"
        print(f"{m.name:<{width}}  {m.source:<11}  {m.input_size:>4}  {offline:<7}  {m.note}")
    print("timm:NAME for any timm architecture (weights downloaded by timm; offline: --weights PATH or none)")
    return 0
