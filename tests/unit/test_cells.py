"""The formula guard written from Python (the audit log's CSV) is the rule the exports'
COPY applies: reference_views.csv_guard, the independent statement, judges both."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.integration.test_formula_guard import TITLES
from tests.support import reference_views
from ticketexport.domain import cells

# Every character the rule names, so generated cells start with them often.
_RULE = cells.FORMULA_START + cells.LEADING_INVISIBLE


@pytest.mark.parametrize("name", sorted(TITLES))
def test_the_named_cells(name: str) -> None:
    assert cells.guard(TITLES[name]) == reference_views.csv_guard(TITLES[name])


@settings(max_examples=500, derandomize=True)
@given(st.text(alphabet=st.sampled_from(_RULE) | st.characters(), max_size=8))
def test_any_cell(text: str) -> None:
    assert cells.guard(text) == reference_views.csv_guard(text)
