"""Keeps the learner's resident memory near its working size: freed heap memory goes back to the OS after a flood of requests."""

from __future__ import annotations

import os
import threading


def resident_bytes() -> int:
    """This process's resident memory (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_freed_memory() -> bool:
    """glibc's `malloc_trim(0)`: hands memory freed inside the malloc heaps back to the OS.
    The training commands tell glibc to keep freed memory (`learner.runs.keep_freed_memory`,
    so XLA's scratch is reused); after a burst of large requests that would keep the burst's
    peak resident for good. Returns whether it ran (glibc only)."""
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


class MemoryKeeper:
    """Every `interval_s`, if the process's resident memory grew by more than `slack_bytes`
    since the last look, releases freed heap memory (`release_freed_memory`): after a flood of
    requests the learner returns near its working size; the cost is one trim (and XLA's
    scratch faulted in again once) per `slack_bytes` of growth, never on a steady state."""

    def __init__(self, interval_s: float = 5.0, slack_bytes: int = 64 << 20):
        self.interval_s, self.slack_bytes = interval_s, slack_bytes
        self.trims = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wsrl-memory", daemon=True)

    def start(self) -> "MemoryKeeper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def check(self, low: int) -> int:
        """One look: trims if resident memory exceeds `low` + slack; returns the new low mark."""
        now = resident_bytes()
        if now > low + self.slack_bytes and release_freed_memory():
            self.trims += 1
            return resident_bytes()
        return min(low, now) if low else now

    def _run(self) -> None:
        low = resident_bytes()
        while not self._stop.wait(self.interval_s):
            low = self.check(low)
