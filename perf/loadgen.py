"""Moved: the load generator is the `ringserve.bench` package (and `ringserve bench`).

This name stays for scripts that still `import loadgen`; it re-exports the package.
The command line is `ringserve bench ADDRESS --model NAME ...` (see `--help`).
"""

from __future__ import annotations

import sys

from ringserve.bench import *  # noqa: F403
from ringserve.bench import __all__  # noqa: F401

if __name__ == "__main__":
    from ringserve.runtime.cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
