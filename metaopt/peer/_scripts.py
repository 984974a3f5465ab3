"""The standard-library scripts a peer runs as child processes (a trial's subreaper, the trial
watchdog and the sweep the watchdog makes when its peer dies), kept as the peer read them.

Run from their files, a metaopt upgraded under a running peer (pip, a git pull into an
editable install) gave the peer's children another version's code: every trial started since
failed at its start (8 of 8 in a run; an end-to-end review). So each script's source is read
once, when this module is first imported (with the peer's executor, as the peer starts),
handed to the child base64 in its environment, and run with ``python -I -c``. (base64: an
environment's text is in the locale's encoding, and a Latin-1 peer failed every trial on a
file's em dashes.)
"""

from __future__ import annotations

import base64
import os
import sys
from dataclasses import dataclass

__all__ = ["ORPHANS", "SUBREAPER", "WATCHDOG", "Script"]

_HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Script:
    """A script's source as read at start (``code``, base64) and the variable that carries it."""

    path: str
    variable: str
    code: str

    @classmethod
    def read(cls, path: str, variable: str) -> Script:
        with open(path, "rb") as file:
            return cls(path, variable, base64.b64encode(file.read()).decode("ascii"))

    def argv(self, *args: str) -> list[str]:
        """The command line that runs the source as read, with ``args`` as its sys.argv[1:]
        (given the environment ``env()``). Its name in a traceback is metaopt-<file stem>."""
        title = "metaopt-" + os.path.basename(self.path).removesuffix(".py").lstrip("_")
        run = (
            f"import base64, os; exec(compile(base64.b64decode(os.environ[{self.variable!r}]),"
            f" {title!r}, 'exec'))"
        )
        return [sys.executable, "-I", "-c", run, *args]

    def env(self) -> dict[str, str]:
        return {self.variable: self.code}


SUBREAPER = Script.read(os.path.join(_HERE, "_subreaper.py"), "METAOPT_SUBREAPER_CODE")
WATCHDOG = Script.read(os.path.join(_HERE, "_watchdog.py"), "METAOPT_WATCHDOG_CODE")
# Run by the watchdog at its peer's death, which may come after an upgrade: the watchdog
# gets it with its own source, and runs it from there (see _watchdog._escaped).
ORPHANS = Script.read(os.path.join(_HERE, "_orphans.py"), "METAOPT_ORPHANS_CODE")
