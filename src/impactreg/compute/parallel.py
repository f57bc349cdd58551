"""Whether a compiled kernel splits one call's work across the registration's threads.

Splitting pays when the other cores are free and costs milliseconds when they are not: a parallel
region waits for its slowest thread, and a thread that finds its core taken (another registration,
any busy process) waits for a time slice. So the choice is measured, not assumed: ``ThreadChoice``
times both ways per unit of work, keeps the faster, and tries the other again now and then, so a
registration follows its machine as the load comes and goes. Either way the results are the same
bits (each point's arithmetic does not depend on the threads).
"""
from __future__ import annotations

import time

PROBE_EVERY = 25  # calls between two tries of the slower way
SMOOTHING = 0.3  # weight of the newest time in the running mean


class ThreadChoice:
    """The running mean of seconds per unit of work on one thread and on several, for one kind of call."""

    def __init__(self):
        self.rate = {False: None, True: None}
        self.calls = 0

    def parallel(self) -> bool:
        """Split this call? Untried ways first, then the faster, the slower every PROBE_EVERY calls."""
        self.calls += 1
        serial, split = self.rate[False], self.rate[True]
        if split is None or serial is None:
            return split is None
        faster = split < serial
        return (not faster) if self.calls % PROBE_EVERY == 0 else faster

    def run(self, parallel: bool, work: float, call):
        """call() timed into the mean of its way; returns what it returns."""
        start = time.perf_counter()
        result = call()
        rate = (time.perf_counter() - start) / max(work, 1.0)
        old = self.rate[parallel]
        self.rate[parallel] = rate if old is None else old + SMOOTHING * (rate - old)
        return result
