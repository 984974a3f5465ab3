"""A checkpointing training for freeze/thaw tests: one step per --sleep seconds, resumable."""

import argparse
import json
import os
import time
from pathlib import Path

import metaopt

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float, required=True)
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--sleep", type=float, default=0.2)
args = parser.parse_args()

state_file = Path(metaopt.checkpoint_dir()) / "state.json"
start = json.loads(state_file.read_text())["step"] if state_file.exists() else 0
print(f"starting at step {start + 1} (METAOPT_RESUME_STEP={os.environ.get('METAOPT_RESUME_STEP')})")
for step in range(start + 1, args.steps + 1):
    time.sleep(args.sleep)
    state_file.write_text(json.dumps({"step": step}))
    metaopt.report(loss=args.x + 1.0 / step, step=step)
    if metaopt.should_stop():
        print(f"stopping at step {step}")
        break
