"""The soak in miniature: `python -m bench.soak` for a minute with a few hundred gateways and the
compressed fault schedule (SOAK_PROFILE=short), in a process of its own so that its Django set-up
(its own database, Redis cluster names, log disk) is apart from the test run's."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bench.soak import FIGURES_PREFIX

BASE_DIR = Path(__file__).resolve().parents[2]
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def soak_database_url() -> str:
    """A database of the soak's own, named after this run's, so parallel runs never share one."""
    url = urlsplit(os.environ["DATABASE_URL"])
    name = url.path.lstrip("/") or "rainlog"
    return urlunsplit(url._replace(path=f"/{name}_soak_short"))


@pytest.mark.slow
def test_it_loses_and_duplicates_no_reading_through_crashes_and_outages(
    record_property: Callable[[str, object], None],
) -> None:
    # Only what a shell gives: the suite's own settings (Q_SYNC, its database) stay out.
    env = {
        **{name: os.environ[name] for name in PASSED_THROUGH if name in os.environ},
        "SOAK_PROFILE": "short",
        "SOAK_SEED": "11",
        "SOAK_DATABASE_URL": soak_database_url(),
    }
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        # Generous: a loaded machine makes the set-up and the final rotation slow.
        timeout=600,
    )
    report = run.stdout + run.stderr
    figures_lines = [line for line in run.stdout.splitlines() if line.startswith(FIGURES_PREFIX)]
    assert figures_lines, report
    figures = json.loads(figures_lines[-1][len(FIGURES_PREFIX) :])
    # How much was archived depends on the machine's load: a figure for the report, not a
    # verdict. What must hold on any machine: every reading not archived is explained (not lost),
    # nothing is archived twice or invented, nothing is left behind.
    record_property("coverage %", figures["coverage %"])
    print(f"short soak coverage: {figures['coverage %']} % of {figures['readings produced']:,}")
    assert figures["readings produced"] > 0, report
    assert figures["archived exactly once"] > 0, report
    assert figures["duplicated"] == 0, report
    assert (
        figures["archived exactly once"] + figures["unobserved, explained"] + figures["lost"]
        == figures["readings produced"]
    ), report
    assert figures["archived but never produced"] == 0, report
    assert figures["retrieval API mismatches"] == 0, report
    assert figures["local leftover readings"] == 0, report
    assert figures["lost"] == 0, report
    assert figures["problems"] == [], report
    assert run.returncode == 0, report
