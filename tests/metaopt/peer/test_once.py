"""OnceEach: once per key, in bounded memory (keys come from the network)."""

from __future__ import annotations

from metaopt.peer._once import OnceEach


def test_each_key_is_first_once_and_memory_stays_bounded() -> None:
    once = OnceEach(cap=3)
    assert once.first("a") and not once.first("a") and once.first("b")
    for i in range(1000):  # a sender spraying fresh node ids
        once.first(f"id{i}")
    assert len(once) <= 3
    assert once.first("a")  # forgotten past the cap: at worst one more line


def test_given_quiet_a_key_is_first_again_after_a_quiet_spell_only() -> None:
    # A peer's clock stepped off a second time, 30 s after the first, was not named again:
    # peers counted gone and trials re-run with no word of the clock (a review).
    now = [0.0]
    once = OnceEach(quiet=20.0, clock=lambda: now[0])
    assert once.first("a")
    for _ in range(10):  # the same incident, retried every 5 s: once
        now[0] += 5.0
        assert not once.first("a")
    now[0] += 20.0  # quiet since the last: a new incident
    assert once.first("a") and not once.first("a")
    assert OnceEach(clock=lambda: now[0]).first("b")  # without quiet: once for good
