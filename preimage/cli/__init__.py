"""Command-line interface: ``preimage COMMAND ...`` (also ``python -m preimage``).

Each command lives in its own module of this package and exposes ``add_parser(subparsers)`` and
``run(args) -> int``. Exit codes, the same for every command:

- 0: done;
- 1: the run finished but did not reach its goal (a class not reached, an image not fooled), or it
  diverged (the last finite result is saved), or an internal error (a bug: one line, ``--debug``
  for the traceback);
- 2: bad input (a missing or damaged file, an unknown name, a number out of range, an existing
  output, a run that would not fit in memory), reported in one line before any work is done;
- 130: interrupted by Ctrl-C (SIGINT); 143: terminated by SIGTERM (``kill``, ``timeout``, a job
  scheduler). Both save what there is: :func:`main` turns SIGTERM into
  :class:`~preimage.errors.Terminated`, a ``KeyboardInterrupt``, so every command's Ctrl-C path
  (the optimization loop, sweeps, training) handles it too.

Warnings from the library (:class:`~preimage.errors.PreimageWarning`, e.g. an animated GIF of which
only the first frame is used) are printed once each as ``preimage COMMAND: warning: ...``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import re
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence

from ..errors import PreimageError, PreimageWarning, Terminated

__all__ = ["main", "build_parser"]

#: the order commands appear in ``--help``; other modules in this package follow alphabetically
ORDER = ["invert", "style", "saliency", "fool", "dream", "atlas", "sweep", "report", "classify", "models", "layers"]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``preimage invert: error: ...``) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class CommandParser(Parser):
    """A command's parser: it refuses unknown arguments itself, so the error names the command
    (``preimage invert: error: unrecognized arguments: --bogus``), not ``preimage``. A command whose
    first word picks an action it parses itself (``caption train``, ``caption eval``) lists those words
    in ``subcommands``, and its errors name the action too. Its positionals may come anywhere among
    its options (``invert a.jpg --layer blocks.3 b.jpg``); after ``--`` (for a file named ``-x.png``)
    they follow the options, as argparse alone has them."""

    subcommands: tuple[str, ...] = ()
    _action = ""
    _intermixing = False  # parse_known_intermixed_args calls back into parse_known_args for its passes

    def error(self, message: str):  # type: ignore[override]
        prog = f"{self.prog} {self._action}" if self._action else self.prog
        self.exit(2, f"{prog}: error: {message}{self._values_hint(message)} (see {self.prog} --help)\n")

    def _values_hint(self, message: str) -> str:
        """For a bad value of an option that takes several (``--decay-steps 10 20 a.jpg``): where its
        values end, since a file right after them is read as one of them."""
        match = re.match(r"argument (-[^/:\s]+)", message)
        action = self._option_string_actions.get(match.group(1)) if match else None
        if action is None or action.nargs not in ("+", "*") or not ("is not" in message or "invalid" in message):
            return ""
        return f"; {match.group(1)} takes every value up to the next option: give files before it"

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        words = list(sys.argv[1:] if args is None else args)
        first = next((w for w in words if not w.startswith("-")), "")  # `caption -q train ...` too
        self._action = first if first in self.subcommands else ""
        # positionals anywhere among the options (`invert a.jpg --steps 9 b.jpg`), except where argparse
        # cannot intermix them: a command with sub-commands (`gan`), whose sub-command's parser does, and
        # after `--` (which intermixed parsing drops, so `-- -file.png` keeps the plain rules)
        plain = "--" in words or any(a.nargs in (argparse.PARSER, argparse.REMAINDER)
                                     for a in self._get_positional_actions())
        if plain:
            namespace, extras = super().parse_known_args(words, namespace)
        else:
            self._intermixing = True
            try:
                namespace, extras = self.parse_known_intermixed_args(words, namespace)
            finally:
                self._intermixing = False
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name in _command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        module.add_parser(sub)
    return parser


#: exit codes of an interruption
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[dict[str, bool]]:
    """Within the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) in the main
    thread; the yielded dict's ``"terminated"`` says whether it came."""
    seen = {"terminated": False}
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum, frame):
        seen["terminated"] = True
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _warnings_as_lines(command: str) -> Iterator[None]:
    """Show each distinct PreimageWarning once, as one line on stderr."""
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PreimageWarning):
            if str(message) not in shown:  # an image checked up front and loaded again: one line
                shown.add(str(message))
                print(f"preimage {command}: warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        original = warnings.showwarning
        warnings.simplefilter("always", PreimageWarning)
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 diverged / not reached / internal error, 2 bad
    input, 130 Ctrl-C, 143 SIGTERM)."""
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
    with sigterm_as_interrupt() as signals, _warnings_as_lines(label(args)):
        code = _run(args)
    if code == EXIT_SIGINT and signals["terminated"]:
        code = EXIT_SIGTERM
    return code


def label(args: argparse.Namespace) -> str:
    """The command as messages name it: ``gan train``, not ``gan`` (a command with sub-commands sets
    ``_label``, at parse time with ``set_defaults`` or in ``run()`` once it knows the action)."""
    return getattr(args, "_label", None) or args.command


def _run(args: argparse.Namespace) -> int:
    from ..memory import limit

    try:
        if getattr(args, "_check_model", False):  # every command with --model: a misspelt name first
            from .common import check_model

            check_model(args)
        with limit(getattr(args, "max_memory", None)):
            return int(args.run(args) or 0)
    except PreimageError as exc:
        print(f"preimage {label(args)}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `preimage models | head`
        return 0
    except OSError as exc:  # any other file error (failed writes are WriteErrors, above): one line, exit 2
        if args.debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"preimage {label(args)}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"preimage {label(args)}: {what}", file=sys.stderr)
        return EXIT_SIGINT
    except Exception as exc:  # a bug: one line unless --debug
        if args.debug:
            raise
        text = str(exc).strip().splitlines()
        print(f"preimage {label(args)}: internal error: {type(exc).__name__}: {text[0] if text else ''} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
