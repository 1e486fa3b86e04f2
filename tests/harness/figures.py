"""The figures a fault scenario measured: printed, and appended as one JSON line to the file
named by ROUTERD_FIGURES when it is set (what scripts/reliability.py turns into
docs/reliability.md).
"""

from __future__ import annotations

import json
import os
from typing import Any


def record(scenario: str, **figures: Any) -> None:
    """Print `figures` for `scenario`, and append them to $ROUTERD_FIGURES when set."""
    line = json.dumps({"scenario": scenario, **figures}, sort_keys=True)
    print(f"figures: {line}")
    path = os.environ.get("ROUTERD_FIGURES")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")
