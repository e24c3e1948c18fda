"""``python -m neverstop``: the same as the ``neverstop`` command."""

import sys

from neverstop.cli import main

sys.exit(main())
