"""Hypothesis strategies shared by the crdt and metaopt suites."""

from __future__ import annotations

from hypothesis import strategies as st

# Any value a record body can hold (string map keys, no NaN: Record refuses those), nested:
# what a hostile or buggy peer can put in a record.
record_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
