"""Input edges the hostile-input drill found (tests/drills/test_hostile_input.py)."""

from __future__ import annotations

import pytest

from clearance.api.wire import _int
from clearance.domain import check_customer_id, valid_customer_id
from clearance.errors import InvalidInput


@pytest.mark.parametrize("text", ["c-1\n", "\n", "a\x00", "a\x1fb", "\x7f"])
def test_ids_with_control_characters_are_refused_even_at_the_end(text):
    assert not valid_customer_id(text)
    with pytest.raises(InvalidInput):
        check_customer_id(text)


@pytest.mark.parametrize("text", ["²", "--5", "١٢", "+7", "-", " ", "5\x00", "0x10", "1e3"])
def test_wire_integers_are_ascii_digits_only(text):
    # "²".isdigit() is true but int("²") fails (it was a 500); "١٢" would read as 12
    with pytest.raises(InvalidInput):
        _int(text, "CampaignID")


def test_wire_integers_keep_their_range():
    assert _int(" 42 ", "CampaignID") == 42
    assert _int("-0", "$skip") == 0
    with pytest.raises(InvalidInput):
        _int(2**31, "ChannelID", maximum=2**31 - 1)
