"""python -m metaopt ... is the metaopt command."""

from __future__ import annotations

import sys

from metaopt.cli import main

sys.exit(main())
