"""The version of asyncbulk."""

__version__ = "0.1.0"
