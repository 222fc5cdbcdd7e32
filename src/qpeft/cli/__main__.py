"""``python -m qpeft.cli``: the ``qpeft`` command (as ``torchrun ... -m qpeft.cli`` runs it)."""

import sys

from qpeft.cli import main

sys.exit(main())
