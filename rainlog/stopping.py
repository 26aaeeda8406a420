"""Stopping a long command cleanly: SIGTERM and Ctrl-C ask it to stop between two items."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
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
