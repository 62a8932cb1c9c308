"""``preimage report SWEEP_DIR [--out DIR] [--cols AXIS]``."""
from __future__ import annotations

import argparse

from .common import positive_int, say


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="grid, curves, metrics table and HTML page of a sweep",
        description="Read a folder written by `preimage sweep` and write grid.png (original and "
                    "reconstructions, rows and columns named after the swept axes), curves.png (loss, "
                    "feature error and TV term over the iterations), metrics.png, metrics.csv (normalized "
                    "feature error, PSNR, SSIM, TV ratio, class agreement, wall time) and a self-contained "
                    "report.html. The files are derived from the runs and rewritten each time.")
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="folder written by preimage sweep (holds sweep.json)")
    p.add_argument("--out", "-o", help="output folder (default: SWEEP_DIR/report)")
    p.add_argument("--cols", metavar="AXIS", help="swept axis to lay out in columns (default: the last swept axis other than image; "
                        "when only images were swept, one column; with image, the originals make the first row)")
    p.add_argument("--cell", type=positive_int, metavar="PX",
                   help="width of each grid cell in pixels (default: the images' own size)")
    p.add_argument("--title", help="title of the grid and page (default: the recipe's)")
    p.add_argument("--quiet", "-q", action="store_true", help="no log lines")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    paths = write_report(args.sweep_dir, args.out, cols=args.cols, cell=args.cell, title=args.title)
    for kind in ("grid", "curves", "metrics", "csv"):
        say(args, f"wrote {paths[kind]}")
    print(paths["html"])
    return 0
