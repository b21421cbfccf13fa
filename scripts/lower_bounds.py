"""Print ``name==version`` for the lower bound of each range-tested dependency in pyproject.toml.

``make lock`` resolves the project with these pins and writes requirements/lock.txt, so the lock
is the lower end of the tested range.
"""

import re
import sys
import tomllib
from pathlib import Path

RANGE_TESTED = ("transformers", "trl", "peft", "datasets", "accelerate", "huggingface-hub")


def main() -> int:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    found = {}
    for spec in dependencies:
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,\s]*)\s*,\s*<", spec)
        if match and match.group(1).lower() in RANGE_TESTED:
            found[match.group(1).lower()] = match.group(2)
    missing = [name for name in RANGE_TESTED if name not in found]
    if missing:
        print(f"pyproject.toml: no '>=lower,<upper' bound for {missing}", file=sys.stderr)
        return 1
    for name in RANGE_TESTED:
        print(f"{name}=={found[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
