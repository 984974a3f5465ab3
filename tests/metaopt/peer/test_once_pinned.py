"""OnceEach rules a mutation audit of metaopt/peer/_once.py found unpinned by the other tests."""

from __future__ import annotations

from metaopt.peer._once import OnceEach


def test_memory_never_exceeds_the_cap_after_any_insertion() -> None:
    """Pins the bound itself (len <= cap at every step, not only at the end of a spray): the keys
    come from the network, so the cap is the only thing between a sender and the peer's memory."""
    for cap in (1, 2, 3, 5):
        once = OnceEach(cap=cap)
        for i in range(4 * cap + 3):
            assert once.first(("sender", i))
            assert 1 <= len(once) <= cap


def test_past_the_cap_it_starts_afresh_with_only_the_new_key() -> None:
    """Pins 'past a cap it starts afresh': the overflowing key is the only one remembered, and
    every earlier key is logged again once (not an arbitrary subset of them)."""
    once = OnceEach(cap=3)
    for key in ("a", "b", "c"):
        assert once.first(key)
    assert once.first("d")
    assert len(once) == 1 and "d" in once
    assert not once.first("d")
    assert once.first("a") and once.first("b")
    assert len(once) == 3


def test_membership_and_length_report_the_keys_already_told_of() -> None:
    """Pins __contains__ and __len__: callers may ask whether a sender was already told of without
    marking it as told."""
    once = OnceEach(cap=10)
    assert len(once) == 0 and "a" not in once
    once.first("a")
    once.first(("addr", "kind"))
    once.first("a")
    assert "a" in once and ("addr", "kind") in once and "b" not in once
    assert len(once) == 2
    assert "b" not in once  # asking does not record
    assert once.first("b")
