#!/usr/bin/env python3
"""Docker HEALTHCHECK without curl: exit 0 when GET /ready answers 200.

The port comes from SLIPSTREAM_PORT (default 3000), as for the server itself;
/ready needs no API key. Standard library only: the runtime image has no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def ready(port: int, timeout_s: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=timeout_s) as response:
            ok: bool = response.status == 200
            return ok
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    sys.exit(0 if ready(int(os.environ.get("SLIPSTREAM_PORT", "3000"))) else 1)
