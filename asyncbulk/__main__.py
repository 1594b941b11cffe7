"""``python -m asyncbulk``: the command line, as the ``asyncbulk`` console script runs it."""

from asyncbulk.cli import main

if __name__ == "__main__":
    main()
