"""The shared Jinja environment's own filters."""

from __future__ import annotations

import jinja2.filters
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import Markup

from ai4ec.render.env import indent

TEXT = st.text(alphabet=st.sampled_from(list("ab <&\n\r\t")), max_size=40)


@given(TEXT, st.integers(0, 12) | st.sampled_from(["\t", "--"]), st.booleans(), st.booleans())
def test_indent_is_jinjas_indent(text: str, width: int | str, first: bool, blank: bool) -> None:
    """Same text as Jinja's filter, for plain and safe input; safe input stays safe."""
    for value in (text, Markup(text)):
        ours = indent(value, width, first, blank)
        theirs = jinja2.filters.do_indent(value, width, first, blank)
        assert str(ours) == str(theirs)
        assert isinstance(ours, Markup) == isinstance(value, Markup)
