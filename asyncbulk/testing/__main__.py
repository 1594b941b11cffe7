"""`python -m asyncbulk.testing`: the command line's `asyncbulk simulate`, options and all.

One simulator command, two ways to start it: see `asyncbulk simulate --help` for the options
(ports, seed, speeds, and the faults to inject). It needs the `cli` extra.
"""

from __future__ import annotations

import sys

from asyncbulk.cli import main

if __name__ == "__main__":
    main(["simulate", *sys.argv[1:]])
