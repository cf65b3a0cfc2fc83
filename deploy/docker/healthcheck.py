"""Docker HEALTHCHECK: exit 0 when the server's GET /healthz answers 200, else 1.

Kubernetes ignores HEALTHCHECK and uses the Deployment's probes; this is for docker and compose.
Only the standard library, so it runs in a second or less.
"""

from __future__ import annotations

import os
import sys
import urllib.request

# W2V_HOST is usually 0.0.0.0 (all interfaces): the loopback address reaches it then.
host = os.environ.get("W2V_HOST", "127.0.0.1")
if host in ("0.0.0.0", "::", ""):
    host = "127.0.0.1"
if ":" in host:
    host = f"[{host}]"
url = f"http://{host}:{os.environ.get('W2V_PORT', '8000')}/healthz"

try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"healthcheck {url}: {exc}", file=sys.stderr)
    sys.exit(1)
