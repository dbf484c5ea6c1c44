"""Passthrough app: every input file is also an output file, under the same name (no nextmv import: fast).

It also writes outputs named like the app's own files (main.py, app.yaml) and like its statistics file.
"""

import os
import shutil

for root, _, files in os.walk("inputs"):
    for name in files:
        source = os.path.join(root, name)
        target = os.path.join("outputs", "solutions", os.path.relpath(source, "inputs"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)
for name in ("main.py", "app.yaml", "statistics.json"):
    with open(os.path.join("outputs", "solutions", name), "w") as file:
        file.write(f"an output named {name}\n")
with open(os.path.join("outputs", "statistics.json"), "w") as file:
    file.write('{"schema": "v1"}\n')
print("passthrough done")
