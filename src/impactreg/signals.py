"""Signals as exceptions, so that staged outputs are cleaned up on the way out.

Python turns SIGINT into ``KeyboardInterrupt``; ``terminate_raises`` turns SIGTERM (``kill``,
``docker stop``, a batch scheduler's time limit) into ``Terminated``, so the same ``with`` blocks
remove half-written work. ``signals_deferred`` holds both back while a few renames must finish together.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM was received; exit code 128 + 15 as a shell reports it."""

    exit_code = 128 + signal.SIGTERM


def _raise_terminated(signum, frame):
    raise Terminated()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def terminate_raises():
    """Within the block SIGTERM raises ``Terminated``; the previous handler is restored after."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def signals_deferred():
    """SIGINT and SIGTERM received within the block take effect when it ends."""
    if not _in_main_thread():
        yield
        return
    caught: list[int] = []
    previous = {signum: signal.signal(signum, lambda n, f: caught.append(n)) for signum in DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if caught:
            handler = previous[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), caught[0])
