"""``python -m receiptflow`` runs the same command line as the ``receiptflow`` script."""

import sys

from .cli import main

sys.exit(main())
