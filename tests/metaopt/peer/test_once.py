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
