"""Command-line interface: ``preimage COMMAND ...`` (also ``python -m preimage``).

Each command lives in its own module of this package and exposes ``add_parser(subparsers)`` and
``run(args) -> int``. Errors a user can cause end in one line on stderr and exit code 2; a run that
diverges exits 1; Ctrl-C exits 130 after saving what there is.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from ..errors import PreimageError

__all__ = ["main", "build_parser"]

#: the order commands appear in ``--help``; other modules in this package follow alphabetically
ORDER = ["invert", "style", "saliency", "fool", "dream", "sweep", "report", "classify", "models", "layers"]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``preimage invert: error: ...``) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _command_modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and m.name != "common"]
    return [n for n in ORDER if n in found] + sorted(n for n in found if n not in ORDER)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(
        prog="preimage",
        description="See what a vision network has learned by optimizing images through it.",
        epilog="Run `preimage COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"preimage {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in _command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 diverged / internal error, 2 bad input, 130 Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return int(exc.code or 0)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    args._argv = argv
    try:
        return int(args.run(args) or 0)
    except PreimageError as exc:
        print(f"preimage {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `preimage models | head`
        return 0
    except KeyboardInterrupt:
        print(f"preimage {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line unless --debug
        if args.debug:
            raise
        text = str(exc).strip().splitlines()
        print(f"preimage {args.command}: internal error: {type(exc).__name__}: {text[0] if text else ''} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
