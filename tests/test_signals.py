"""SIGTERM as an exception while a command runs; SIGINT and SIGTERM held back while outputs are moved."""
import os
import signal

import pytest

from impactreg.signals import Terminated, signals_deferred, terminate_raises


def test_sigterm_raises_within_the_block_and_the_old_handler_returns():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda n, f: seen.append(n))
    try:
        with pytest.raises(Terminated):
            with terminate_raises():
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs between bytecodes
                    pass
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_signals_wait_until_the_deferred_block_ends():
    # Python's own SIGINT handler, whatever an earlier test's library (Dask, MONAI, ...) left installed
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        steps = []
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):
                    pass
                steps.append("finished")
        assert steps == ["finished"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, outer)
