"""Probe app: writes {"solution": {"stdin": <the raw input text>}}, without importing nextmv (fast).

A JSON object input may ask it to write its process id to `pid_file` and to sleep `sleep` seconds first.
"""

import json
import os
import sys
import time

raw = sys.stdin.read()
try:
    data = json.loads(raw)
except ValueError:
    data = None
if isinstance(data, dict) and data.get("pid_file"):
    with open(data["pid_file"], "w") as file:
        file.write(str(os.getpid()))
if isinstance(data, dict) and data.get("sleep"):
    time.sleep(data["sleep"])
print(json.dumps({"solution": {"stdin": raw}}))
