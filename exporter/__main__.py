"""`python -m exporter`: the same as the `exporter` console script."""

import sys

from .cli import main

sys.exit(main())
