"""The ``qpeft`` command (``qpeft.cli:main``): parse, run one subcommand, turn ``UsageError`` into one line.

``parser`` builds the flags, ``commands`` holds the subcommand handlers, ``config_file``
expands ``--config FILE``.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence

from qpeft.cli.commands import COMMANDS
from qpeft.cli.config_file import expand_config_file
from qpeft.cli.parser import build_parser
from qpeft.utils.errors import UsageError

__all__ = ["build_parser", "main"]

log = logging.getLogger("qpeft")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        argv = expand_config_file(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(f"qpeft: error: {error}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="qpeft: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars; training and generation keep theirs
    # Deprecation notices raised inside transformers/PEFT are for their developers, not for our users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        code = COMMANDS[args.command](args)
    except UsageError as error:
        print(f"qpeft: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qpeft: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return code or 0

