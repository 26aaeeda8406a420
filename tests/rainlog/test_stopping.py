"""Commands stop cleanly: SIGTERM and Ctrl-C set a flag checked between items, nothing more."""

import os
import signal

import pytest

from rainlog.stopping import StopRequest


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sets_the_flag_instead_of_ending_the_process(signum: int) -> None:
    before = signal.getsignal(signum)
    with StopRequest() as stop:
        assert not stop()
        os.kill(os.getpid(), signum)
        assert stop()
    assert signal.getsignal(signum) == before
