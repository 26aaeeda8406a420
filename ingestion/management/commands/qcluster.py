"""`manage.py qcluster`: django-q2's cluster, stopping within seconds of SIGTERM.

On SIGTERM or SIGINT, django-q2 stops taking tasks and waits for each worker's current one. A
polling window would poll on until its window is over, a minute or more with nobody to hand over
to. So the cluster here also passes a SIGTERM to each of its workers first, where
`rainlog.stopping.worker_stopping` asks a polling window to finish its tick and hand its shard
over at once, and a rotation to record its files in flight; an idle worker waits for its "STOP"
as before. The options are django-q2's.
"""

from __future__ import annotations

import logging
import os
import signal
from contextlib import suppress
from types import FrameType
from typing import Any

from django.conf import settings
from django_q import cluster as django_q_cluster
from django_q.cluster import Cluster, Sentinel
from django_q.management.commands import qcluster

logger = logging.getLogger(__name__)


class SteadySentinel(Sentinel):
    """django-q2's sentinel, ignoring SIGTERM, as do the pusher and monitor it forks (workers set
    their own handler). The cluster's main process stops it through its stop event. Killed by a
    SIGTERM sent to every process (systemd's default), the stock sentinel can die holding that
    event's lock, and the main process then waits for it for ever."""

    def start(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        super().start()


class HandingOverCluster(Cluster):
    def start(self) -> int:
        # django-q2 starts the sentinel by its module-level name: ours, for this fork.
        stock = django_q_cluster.Sentinel
        django_q_cluster.Sentinel = SteadySentinel
        try:
            return super().start()
        finally:
            django_q_cluster.Sentinel = stock

    def sig_handler(self, signum: int, frame: FrameType | None) -> None:
        if self.sentinel is not None and self.sentinel.is_alive():
            self.signal_workers()
        super().sig_handler(signum, frame)

    def signal_workers(self) -> None:
        """SIGTERM to every worker the sentinel last reported (it does so every half second)."""
        try:
            workers = self.stat.workers
        except Exception:
            # The broker is down: the workers' tasks end as django-q2 lets them.
            logger.exception("cannot list the workers to stop them")
            return
        for pid in workers:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


class Command(qcluster.Command):
    def handle(self, *args: Any, **options: Any) -> None:
        # As django-q2's own command, with the cluster above.
        settings.SECRET_KEY  # noqa: B018 (signing needs it: fail now, not in a worker)
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        cluster = HandingOverCluster()
        cluster.start()
        if options.get("run_once"):
            cluster.stop()
