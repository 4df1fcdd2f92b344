"""``make bench``: run every benchmark and write bench/results.json."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from . import matching


def main() -> None:
    print("matching (best of 5 rounds, 2,000 events)")
    results = {"machine": {"cores": os.cpu_count(), "python": platform.python_version()}, "matching": matching.main()}
    out = Path(__file__).parent / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
