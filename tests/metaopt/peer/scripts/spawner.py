"""A trial that starts a silent child process, then reports slowly: the child prints nothing,
so only its process group (or its environment) reaches it once the trial's peer is gone."""

import subprocess
import sys
import time

subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
for step in range(1, 600):
    print(f'METAOPT {{"loss": 1.0, "step": {step}}}', flush=True)
    time.sleep(0.2)
