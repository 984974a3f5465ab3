"""Child process for test_durability: add records in batches, print each key once add returns.

Usage: python durability_writer.py DATA_DIR SEED. Runs until killed or 5000 batches are written.
"""

from __future__ import annotations

import sys

from crdt import LevelDBStore, Record


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    origin = seed.to_bytes(16, "big")
    seq = 0
    with LevelDBStore(path) as store:
        for batch_no in range(5000):
            batch = []
            for _ in range(1 + batch_no % 7):
                seq += 1
                body = {"batch": batch_no, "pad": bytes(seq % 300), "seed": seed}
                batch.append(Record.create("event", origin, seq, seq, body, [b"exp"]))
            store.add(batch)
            # Acknowledge only after add returned: these keys must survive the kill.
            sys.stdout.write("".join(r.key.hex() + "\n" for r in batch))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
