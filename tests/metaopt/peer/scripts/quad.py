"""A tiny training for peer tests: a quadratic 'loss' reported over a few steps.

--steps and --sleep shape its duration; --fail makes it crash at once; --quiet reports nothing.
"""

import argparse
import sys
import time

import metaopt

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float, required=True)
parser.add_argument("--y", type=float, default=0.0)
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--sleep", type=float, default=0.05)
parser.add_argument("--fail", action="store_true")
parser.add_argument("--quiet", action="store_true")
args = parser.parse_args()

if args.fail:
    print("something went wrong at once", file=sys.stderr)
    sys.exit(3)
loss = (args.x - 0.3) ** 2 + (args.y + 0.2) ** 2
for step in range(1, args.steps + 1):
    time.sleep(args.sleep)
    if args.quiet:
        print(f"step {step}: value {loss + 1.0 / step:.6f}")
    else:
        metaopt.report(loss=loss + 1.0 / step, step=step)
    if metaopt.should_stop():
        break
if not args.quiet:
    metaopt.report(loss=loss)
