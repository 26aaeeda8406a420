"""A web process (the URLconf, the API, the admin) never loads the polling engine, its shard
leases or uvloop: it reads the latest reading through ingestion.polling.latest."""

import os
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
POLLING_ONLY = ("ingestion.polling.engine", "ingestion.polling.leases", "uvloop")
# In a fresh interpreter: pytest's own process has imported everything already.
PROBE = """
import sys
import django
django.setup()
from django.urls import get_resolver
get_resolver().url_patterns  # imports rainlog.urls, the API's and the admin's views
import rainlog.wsgi
print(" ".join(name for name in {modules!r} if name in sys.modules))
"""


def test_it_serves_the_api_and_the_admin_without_importing_the_polling_engine() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(modules=POLLING_ONLY)],
        cwd=PROJECT_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "rainlog.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"a web process imported {result.stdout.strip()}"
