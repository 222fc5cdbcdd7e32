"""``python -m qpeft``: the ``qpeft`` command."""

import sys

from qpeft.cli import main

sys.exit(main())
