"""Stopping a long command cleanly: SIGTERM and Ctrl-C ask it to stop between two items."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any


class StopRequest(threading.Event):
    """While entered, SIGTERM and SIGINT set this event instead of ending the process.

    Loops call the object (or `is_set()`) between items and wait on it (`wait(seconds)`) instead
    of sleeping, so a stop cuts the wait short. A second signal of the same kind acts as it would
    have without us (Ctrl-C twice quits at once). On exit the previous handlers are restored.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, on_request: Callable[[], object] | None = None) -> None:
        super().__init__()
        self.on_request = on_request
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.is_set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum in self._previous:
            signal.signal(signum, self._previous[signum])
        if not self.is_set() and self.on_request is not None:
            self.on_request()
        self.set()

    def __enter__(self) -> StopRequest:
        # Signal handlers can only be set from the main thread; elsewhere nothing is installed.
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class WorkerStopping:
    """SIGTERM in a django-q2 worker process, which would otherwise end it at once, whatever it
    was doing (a polling window mid-tick, a rotation mid-upload, or, idle, holding the lock of
    the cluster's task queue, which then never frees it and hangs the cluster's stop).

    `install()` runs as each worker starts (django-q2's `post_spawn`). Then a SIGTERM asks the
    task under way to stop, if it said how (`task()`: a polling window finishes its tick and
    hands its shard over, a rotation records the files in flight), and otherwise changes
    nothing: the cluster's sentinel, stopping, sends each worker its last "STOP". If the sentinel
    is gone (systemd signals every process of a unit, and the sentinel ends at once), nobody will:
    the worker then ends by itself once no task is under way.
    """

    CHECK_SECONDS = 0.2

    def __init__(self) -> None:
        self.parent = 0
        self.requested = threading.Event()
        self.current: threading.Event | None = None
        self._lock = threading.Lock()

    def install(self, **signal_arguments: object) -> None:
        if multiprocessing.parent_process() is None:
            # A task run inline (Q_SYNC) by a web or test process, which is no cluster worker:
            # its SIGTERM stays its server's (gunicorn would otherwise wait out its graceful
            # timeout for a worker that ignores it).
            return
        self.parent = os.getppid()
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested.is_set():
            return
        self.requested.set()
        if self.current is not None:
            self.current.set()
        threading.Thread(target=self._end_when_orphaned, name="worker-stop", daemon=True).start()

    def _end_when_orphaned(self) -> None:
        while True:
            with self._lock:
                if self.current is None and os.getppid() != self.parent:
                    os._exit(0)
            time.sleep(self.CHECK_SECONDS)

    @contextmanager
    def task(self) -> Iterator[threading.Event]:
        """An event a SIGTERM sets while the task runs (at once if one came before)."""
        stop = threading.Event()
        if self.requested.is_set():
            stop.set()
        with self._lock:
            self.current = stop
        try:
            yield stop
        finally:
            with self._lock:
                self.current = None


worker_stopping = WorkerStopping()
