"""`python -m ovmlc ...`: the `ovmlc` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
