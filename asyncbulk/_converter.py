"""The one place that builds cattrs converters: wire names live in the vendors' hooks on top."""

from __future__ import annotations

import cattrs

__all__ = ["make_converter"]


def make_converter() -> cattrs.Converter:
    """A fresh converter (never the global one) that keeps unknown fields out of the way.

    Vendor modules register their own hooks on it: camelCase wire names, epoch milliseconds,
    and the `raw` mapping that keeps every field the server sent.
    """
    return cattrs.Converter(forbid_extra_keys=False, prefer_attrib_converters=True)
