"""``python -m squall`` and the ``squall`` script: the command line (see `squall.cli`)."""

import sys

from squall.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
