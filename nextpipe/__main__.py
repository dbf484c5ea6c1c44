"""``python -m nextpipe``: the ``nextpipe`` command (see :mod:`nextpipe.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
