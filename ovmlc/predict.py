"""`python -m ovmlc.predict ...` = `ovmlc predict ...`, for launchers that run a module:
`accelerate launch -m ovmlc.predict photos/ --labels "cat, dog" --output tags.jsonl` (one shard per process)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import main as cli_main

    return cli_main(["predict", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
