"""Command line: ``cpixelcnn <command>`` (also ``python -m cpixelcnn``).

The commands live in :mod:`cpixelcnn.commands`, one module each; this module only parses and
calls. Errors a user can cause print one line ``cpixelcnn: error: …`` and exit with status 2
(under torchrun: by the rank that found them, and where torchrun's summary reads it); Ctrl-C exits
130 (training saves first); a training run, classify, evaluate or score stopped by SIGTERM or
SIGUSR1 exits 75.
"""

from __future__ import annotations

import argparse
import re
import sys

from cpixelcnn.commands import COMMANDS


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``cpixelcnn: error: …``, exit 2) instead of usage dumps."""

    def error(self, message):
        from cpixelcnn.training.distributed import is_main_process

        message = re.sub(r"^argument ([^:]+): must ", r"\1 must ", message)  # an option's own bounds: "--n must be >= 1 ..."

        self.exit(2, f"cpixelcnn: error: {message} (see {self.prog} --help)\n" if is_main_process() else None)  # under torchrun: said once


def build_parser() -> argparse.ArgumentParser:
    from cpixelcnn._version import __version__

    parser = _Parser(prog="cpixelcnn", description="Fast, exact class-conditional PixelCNN++")
    parser.add_argument("--version", action="version", version=f"cpixelcnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP)
        command.add_arguments(p)
        p.set_defaults(func=command.run, stoppable=getattr(command, "STOPPABLE", False))
    return parser


def main(argv: list[str] | None = None) -> int:
    from cpixelcnn.notices import speaking_command_line

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    speaking_command_line(True)  # messages name flags while the command runs (and Python keywords again after it)
    try:
        return _run(args)
    except (ValueError, TypeError, RuntimeError, OSError) as err:
        from cpixelcnn.training.distributed import record_for_torchrun

        message = getattr(err, "summary", None) or (str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        if not getattr(err, "quiet", False):  # under torchrun one rank says it
            print(f"cpixelcnn: error: {message}", file=sys.stderr)
        record_for_torchrun(f"cpixelcnn: error: {message}")
        return 2
    except KeyboardInterrupt:
        print("cpixelcnn: interrupted", file=sys.stderr)
        return 130
    finally:
        speaking_command_line(False)


def _run(args) -> int:
    """The command; one that loops over images (``STOPPABLE``) stops between two batches on
    SIGTERM or SIGUSR1 and exits 75, as a preempted training run does."""
    if not args.stoppable:
        return args.func(args)
    from cpixelcnn.stopping import REQUEUE_STATUS, Stopped, StopSignals

    try:
        with StopSignals(until_exit=True):
            return args.func(args)
    except Stopped as err:
        print(f"cpixelcnn: {args.command} {err} between two batches; nothing was written (run it again to finish)", file=sys.stderr)
        return REQUEUE_STATUS


if __name__ == "__main__":
    sys.exit(main())
