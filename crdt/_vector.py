"""Per-origin version vectors with holes: exactly which (origin, seq) pairs a replica holds.

Each origin numbers its records 1, 2, 3, ... Eager pushes can arrive out of order or be lost,
so a replica's holdings of one origin are a contiguous prefix plus a few runs above it. Keeping
the runs (not just the high-water mark) lets the fast path name precisely what is missing in one
round trip; the summary is O(origins + holes), not O(records).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter

import msgpack

__all__ = ["SeqSet", "VersionVector"]

_start = itemgetter(0)
_DIGEST_MOD = 1 << 256


class SeqSet:
    """A set of positive integers kept as sorted, disjoint, non-adjacent closed runs."""

    __slots__ = ("_runs",)

    def __init__(self, runs: Iterable[tuple[int, int]] = ()) -> None:
        self._runs: list[list[int]] = []
        for lo, hi in runs:
            self.add_run(lo, hi)

    def add(self, seq: int) -> bool:
        """Add one number; True if it was new."""
        return self.add_run(seq, seq) > 0

    def add_run(self, lo: int, hi: int) -> int:
        """Add lo..hi inclusive; return how many numbers were new."""
        if lo > hi:
            return 0
        runs = self._runs
        # Fast path: appending at or just past the end is how records usually arrive.
        if not runs or runs[-1][1] + 1 < lo:
            runs.append([lo, hi])
            return hi - lo + 1
        if runs[-1][0] <= lo and runs[-1][1] + 1 >= lo:
            added = max(0, hi - runs[-1][1])
            runs[-1][1] = max(runs[-1][1], hi)
            return added
        # Bisect on the runs themselves: a list of their starts built here made every
        # out-of-order add O(runs) (100k shuffled adds took about a minute).
        i = bisect_right(runs, lo, key=_start) - 1
        start = i if i >= 0 and runs[i][1] + 1 >= lo else i + 1
        j = start
        new_lo, new_hi = lo, hi
        covered = 0
        while j < len(runs) and runs[j][0] <= hi + 1:
            a, b = runs[j]
            covered += max(0, min(b, hi) - max(a, lo) + 1)
            new_lo = min(new_lo, a)
            new_hi = max(new_hi, b)
            j += 1
        runs[start:j] = [[new_lo, new_hi]]
        return (hi - lo + 1) - covered

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, int):
            return False
        runs = self._runs
        lo, hi = 0, len(runs)
        while lo < hi:
            mid = (lo + hi) // 2
            if runs[mid][1] < seq:
                lo = mid + 1
            else:
                hi = mid
        return lo < len(runs) and runs[lo][0] <= seq

    def runs(self) -> list[tuple[int, int]]:
        return [(a, b) for a, b in self._runs]

    @property
    def run_count(self) -> int:
        return len(self._runs)

    def __bool__(self) -> bool:
        return bool(self._runs)

    def __len__(self) -> int:
        return sum(b - a + 1 for a, b in self._runs)

    @property
    def high(self) -> int:
        """The largest number held, 0 when empty."""
        return self._runs[-1][1] if self._runs else 0

    def high_below(self, limit: int) -> int:
        """The largest number held below limit, 0 if none."""
        runs = self._runs
        if runs and runs[-1][1] < limit:  # (how it always is, for the writer's use)
            return runs[-1][1]
        i = bisect_right(runs, limit - 1, key=_start) - 1
        return 0 if i < 0 else min(runs[i][1], limit - 1)

    def free_after(self, seq: int) -> int:
        """The smallest number above seq not held."""
        runs = self._runs
        i = bisect_right(runs, seq + 1, key=_start) - 1
        return runs[i][1] + 1 if i >= 0 and runs[i][1] > seq else seq + 1

    def missing_from(self, other: SeqSet) -> Iterator[tuple[int, int]]:
        """Runs of numbers in self that other lacks."""
        theirs = other._runs
        j = 0
        for lo, hi in self._runs:
            cur = lo
            while cur <= hi:
                while j < len(theirs) and theirs[j][1] < cur:
                    j += 1
                if j == len(theirs) or theirs[j][0] > hi:
                    yield (cur, hi)
                    break
                a, b = theirs[j]
                if a > cur:
                    yield (cur, a - 1)
                cur = b + 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeqSet) and other._runs == self._runs

    def __repr__(self) -> str:
        return f"SeqSet({self.runs()})"


class VersionVector:
    """origin id → SeqSet of the sequence numbers held from that origin."""

    __slots__ = ("_by_origin", "_changed", "_digest", "_hashes", "_sum")

    def __init__(self, by_origin: Mapping[bytes, SeqSet] | None = None) -> None:
        self._by_origin: dict[bytes, SeqSet] = dict(by_origin or {})
        # digest()'s state: each origin's hash, their sum, and the origins changed since.
        self._hashes: dict[bytes, int] = {}
        self._sum = 0
        self._changed: set[bytes] = set(self._by_origin)
        self._digest: bytes | None = None

    def add(self, origin: bytes, seq: int) -> bool:
        seqs = self._by_origin.get(origin)
        if seqs is None:
            seqs = self._by_origin[origin] = SeqSet()
        if seqs.add(seq):
            self._changed.add(origin)
            self._digest = None
            return True
        return False

    def add_run(self, origin: bytes, lo: int, hi: int) -> int:
        """Add origin's lo..hi inclusive at once; return how many were new."""
        if lo > hi:
            return 0
        seqs = self._by_origin.get(origin)
        if seqs is None:
            seqs = self._by_origin[origin] = SeqSet()
        added = seqs.add_run(lo, hi)
        if added:
            self._changed.add(origin)
            self._digest = None
        return added

    def __len__(self) -> int:
        """How many origins are listed."""
        return len(self._by_origin)

    def digest(self) -> bytes:
        """16 bytes naming this vector, so a request can say "mine is this" without listing it.

        The sum mod 2^256 of a hash of each origin's runs, so only the origins changed since
        the last call are hashed again: serialising a whole vector of tens of thousands of
        origins took tens of milliseconds after every add. Equal vectors give equal digests
        whatever order they were built in; a collision only costs the fast path its shortcut
        (the backstop still finds any difference).
        """
        if self._digest is None:
            self._rehash_changed()
            total = self._sum.to_bytes(32, "little")
            self._digest = hashlib.blake2b(total, digest_size=16).digest()
        return self._digest

    def _rehash_changed(self) -> None:
        total = self._sum
        hashes = self._hashes
        for origin in self._changed:
            total -= hashes.pop(origin, 0)
            seqs = self._by_origin[origin]
            if seqs:  # an empty SeqSet counts for nothing, as in __eq__
                flat = [n for run in seqs.runs() for n in run]
                packed = msgpack.packb([origin, flat], use_bin_type=True)
                hashes[origin] = int.from_bytes(hashlib.blake2b(packed).digest(), "little")
                total += hashes[origin]
        self._sum = total % _DIGEST_MOD
        self._changed.clear()

    def most_runs(self) -> int:
        """The most runs any one origin has (0 when empty)."""
        return max((seqs.run_count for seqs in self._by_origin.values()), default=0)

    def total_runs(self) -> int:
        """The runs of every origin together (a vector's size on the wire)."""
        return sum(seqs.run_count for seqs in self._by_origin.values())

    def get(self, origin: bytes) -> SeqSet:
        return self._by_origin.get(origin) or SeqSet()

    def origins(self) -> list[bytes]:
        return sorted(self._by_origin)

    def high(self, origin: bytes) -> int:
        seqs = self._by_origin.get(origin)
        return seqs.high if seqs else 0

    def contains(self, origin: bytes, seq: int) -> bool:
        seqs = self._by_origin.get(origin)
        return seqs is not None and seq in seqs

    def missing_from(self, other: VersionVector) -> Iterator[tuple[bytes, int, int]]:
        """(origin, lo, hi) runs held here that other lacks."""
        for origin in self.origins():
            for lo, hi in self._by_origin[origin].missing_from(other.get(origin)):
                yield origin, lo, hi

    def to_wire(self) -> list[list[object]]:
        """[[origin, [lo, hi, lo, hi, ...]], ...] — compact and msgpack-ready."""
        return [
            [origin, [n for run in self._by_origin[origin].runs() for n in run]]
            for origin in self.origins()
        ]

    @classmethod
    def from_wire(
        cls, value: object, *, max_origins: int = 1 << 16, max_runs: int = 1 << 17
    ) -> VersionVector:
        """Parse to_wire's form; raise ValueError on anything else, or past max_runs runs in
        all (each costs a Python step: 10 million of them in one 62 MiB message held a peer's
        event loop 14 s and 2 GB)."""
        if not isinstance(value, list) or len(value) > max_origins:
            raise ValueError("version vector must be a list of [origin, runs]")
        out: dict[bytes, SeqSet] = {}
        runs_left = max_runs
        for entry in value:
            if not isinstance(entry, list) or len(entry) != 2:
                raise ValueError("version vector entry must be [origin, runs]")
            origin, flat = entry
            if not isinstance(origin, bytes) or not isinstance(flat, list) or len(flat) % 2:
                raise ValueError("version vector entry must be [bytes, [lo, hi, ...]]")
            if origin in out:
                raise ValueError("version vector lists an origin twice")
            runs_left -= len(flat) // 2
            if runs_left < 0:
                raise ValueError(f"version vector has more than {max_runs} runs")
            seqs = SeqSet()
            prev = -1
            for lo, hi in zip(flat[::2], flat[1::2], strict=True):
                if (
                    isinstance(lo, bool)
                    or isinstance(hi, bool)
                    or not isinstance(lo, int)
                    or not isinstance(hi, int)
                    or not 1 <= lo <= hi < 2**63
                ):
                    raise ValueError("version vector runs must be 1 <= lo <= hi")
                # to_wire's runs ascend with gaps; requiring that keeps parsing linear (each run
                # takes add_run's append path) instead of quadratic on adversarial orderings.
                if lo <= prev + 1:
                    raise ValueError("version vector runs must ascend and not touch")
                prev = hi
                seqs.add_run(lo, hi)
            out[origin] = seqs
        return cls(out)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VersionVector):
            return False
        mine = {o: s for o, s in self._by_origin.items() if len(s)}
        theirs = {o: s for o, s in other._by_origin.items() if len(s)}
        return mine == theirs

    def __repr__(self) -> str:
        return f"VersionVector({ {o.hex()[:8]: s.runs() for o, s in self._by_origin.items()} })"
