"""`TrackingOptions` on both clients, and the deprecated keywords it replaces."""

from __future__ import annotations

import pytest

from asyncbulk import ChakraClient, TrackingOptions, ValidationError, ZefortClient


def test_both_clients_take_the_same_options():
    """One TrackingOptions is accepted by both clients as tracking=."""
    options = TrackingOptions(min_interval=0.5, max_interval=10, max_in_flight=3)
    chakra = ChakraClient("chakra-token", tracking=options)
    zefort = ZefortClient("zefort-key", tracking=options)
    assert chakra._tracking == options
    assert zefort._tracking == options


def test_client_defaults_fill_in_max_in_flight():
    """Without max_in_flight, Chakra polls with half its request slots and Zefort with 8."""
    assert ChakraClient("chakra-token", max_in_flight=10)._tracking.max_in_flight == 5
    assert ZefortClient("zefort-key")._tracking.max_in_flight == 8


def test_chakra_poll_interval_is_deprecated_and_mapped():
    """ChakraClient(poll_interval=(a, b)) warns and becomes min_interval=a, max_interval=b."""
    with pytest.warns(DeprecationWarning, match="poll_interval"):
        client = ChakraClient("chakra-token", poll_interval=(0.1, 2.0))
    assert (client._tracking.min_interval, client._tracking.max_interval) == (0.1, 2.0)


def test_zefort_poll_keywords_are_deprecated_and_mapped():
    """ZefortClient's poll_* keywords warn and map onto the same TrackingOptions fields."""
    with pytest.warns(DeprecationWarning, match="poll_min_interval, poll_max_interval"):
        client = ZefortClient(
            "zefort-key",
            poll_min_interval=0.1,
            poll_max_interval=2.0,
            sweep_interval=1.0,
            polls_in_flight=2,
        )
    assert client._tracking == TrackingOptions(
        min_interval=0.1, max_interval=2.0, sweep_interval=1.0, max_in_flight=2
    )


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: ChakraClient("chakra-token", poll_interval=(5.0, 1.0)), "poll_interval"),
        (lambda: ChakraClient("chakra-token", poll_interval=5.0), "poll_interval"),
        (lambda: ZefortClient("zefort-key", poll_min_interval=-1.0), "poll_min_interval"),
        (
            lambda: ZefortClient("zefort-key", poll_min_interval=2, poll_max_interval=1),
            "poll_max_interval",
        ),
        (
            lambda: ZefortClient("zefort-key", tracking=TrackingOptions(), poll_min_interval=0.1),
            "poll_min_interval",
        ),
    ],
    ids=["chakra-reversed", "chakra-not-a-pair", "zefort-negative", "zefort-reversed", "both"],
)
def test_bad_deprecated_keywords_name_the_keyword_used(make, field):
    """A bad deprecated keyword is a ValidationError naming that keyword, before any warning."""
    with pytest.raises(ValidationError) as caught:
        make()
    assert caught.value.field == field
