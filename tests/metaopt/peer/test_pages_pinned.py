"""Paged listings (metaopt.peer._pages): bounds, cursors and refusals the CLI relies on."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from crdt import MemoryStore, Record
from metaopt._errors import MetaoptError
from metaopt._records import EVENT, EXPERIMENT, TRIAL, EventBody, ExperimentSpec
from metaopt.peer._pages import PAGE_BYTES, ListingPages, TrialPages
from metaopt.peer._replica import Replica

NODE = b"n" * 16
EXP = Record.create(
    EXPERIMENT, NODE, 1, 1000, ExperimentSpec("e", {"x": "uniform(0, 1)"}).to_body(), []
)


def _state(stamps: list[int], ends: dict[int, str] | None = None) -> Any:
    """The experiment with a trial per stamp (its created time); ends: index -> how it ended."""
    store = MemoryStore()
    store.add([EXP])
    for i, stamp in enumerate(stamps):
        body = {"params": {"x": i / 1000}, "node": NODE, "counter": i + 1}
        trial = Record.create(TRIAL, NODE, 10 * i + 2, stamp, body, [EXP.key])
        kinds = ["started", *([ends[i]] if ends and i in ends else [])]
        events = [
            Record.create(EVENT, NODE, 10 * i + 3 + j, stamp + 1 + j,
                          EventBody(trial.key, EXP.key, kind, NODE, 1,
                                    {"objective": 0.5} if kind == "completed" else {}).to_body(),
                          [trial.key, EXP.key])
            for j, kind in enumerate(kinds)
        ]  # fmt: skip
        store.add([trial, *events])
    return Replica(store).experiments[EXP.key]


def _row(trial: Any) -> dict[str, Any]:
    return {"id": trial.id, "state": trial.state}


def _all_pages(state: Any, body: dict[str, Any]) -> tuple[list[str], int]:
    """Every trial id the pages give for body, and how many pages there were."""
    ids: list[str] = []
    after = None
    for pages in range(1, 1000):
        query = TrialPages.parse({**body, "experiment": "e", "after": after})
        _trials, rows, after = query.page(state, _row)
        ids += [r["id"] for r in rows]
        if after is None:
            return ids, pages
    raise AssertionError("the pages never ended")


def test_without_page_bytes_a_reply_is_bounded_by_the_default_page() -> None:
    """The CLI sends no page_bytes (and an older one sends a bare name): its replies must
    still stay under the frame limit, not carry the whole list at once."""
    assert TrialPages.parse("e").page_bytes == PAGE_BYTES
    assert TrialPages.parse({"experiment": "e"}).page_bytes == PAGE_BYTES
    assert ListingPages.parse({"after": None}).page_bytes == PAGE_BYTES
    assert TrialPages.parse({"experiment": "e", "page_bytes": None}).page_bytes is None


def test_rows_that_fill_a_page_exactly_share_it() -> None:
    """A page holds rows while their bytes fit page_bytes, the last one exactly included:
    one more page than needed is one more round trip (and an off-by-one in the bound)."""
    state = _state([2000 + i for i in range(4)])
    sizes = [len(msgpack.packb(_row(t), use_bin_type=True)) for t in state.trials()]
    query = TrialPages.parse({"experiment": "e", "page_bytes": sizes[0] + sizes[1]})
    _trials, rows, after = query.page(state, _row)
    assert len(rows) == 2 and after is not None
    rows_of = [(t.id, lambda t=t: _row(t)) for t in state.trials()]
    listed, nxt = ListingPages(None, sizes[0] + sizes[1]).page(rows_of)
    assert len(listed) == 2 and nxt == rows_of[1][0]


def test_trials_created_at_the_same_moment_are_each_paged_once() -> None:
    """Trials of one stamp (many peers, one millisecond) are ordered by key too: a cursor on
    the stamp alone skipped or repeated them."""
    state = _state([5000] * 12)
    ids, pages = _all_pages(state, {"page_bytes": 1})
    assert ids == [t.id for t in state.trials()] and len(set(ids)) == 12 and pages == 12


def test_open_trials_are_those_not_ended_whichever_way_they_ended() -> None:
    """`submit --wait` and `status` read the open trials: a failed or killed one is ended,
    as a completed one is."""
    state = _state([2000, 2010, 2020, 2030], {0: "completed", 1: "failed", 2: "killed"})
    ids, _ = _all_pages(state, {"trials": "open", "page_bytes": None})
    assert ids == [state.trials()[3].id]


@pytest.mark.parametrize(
    "after",
    [[True, "00" * 32], [1, "00" * 32, 3], [1, 7], [1.0, "00" * 32], "00" * 32],
    ids=["bool-stamp", "three-items", "int-id", "float-stamp", "bare-id"],
)
def test_a_trial_cursor_not_of_the_form_sent_is_refused_in_one_line(after: Any) -> None:
    """Only a cursor the peer sent ([created, trial id hex]) is taken: anything else is a
    one-line refusal, not a crash or a page from a wrong place."""
    with pytest.raises(MetaoptError, match="after is the previous page's next"):
        TrialPages.parse({"experiment": "e", "after": after})


@pytest.mark.parametrize("page_bytes", [True, False, 0, -5, 1.5, "100"])
def test_a_page_size_not_a_whole_number_of_bytes_is_refused(page_bytes: Any) -> None:
    """page_bytes True is not 1 byte: a bool or a string slipping through would page by a
    size nobody asked for."""
    with pytest.raises(MetaoptError, match="page_bytes is a number of bytes"):
        TrialPages.parse({"experiment": "e", "page_bytes": page_bytes})
    with pytest.raises(MetaoptError, match="page_bytes is a number of bytes"):
        ListingPages.parse({"page_bytes": page_bytes})
