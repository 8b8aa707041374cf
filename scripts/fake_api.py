"""Run the fake recordings API: `python scripts/fake_api.py --help` (the package is scripts/fakeapi/)."""

import sys

from fakeapi.cli import main

if __name__ == "__main__":
    sys.exit(main())
