"""Ctrl-C and SIGTERM for the long-running commands (`wsrl run`, `wsrl learner`, `wsrl actor`).

The first SIGINT/SIGTERM asks for a clean stop: the handler only records it and sets a
`SignalSafeEvent` (a flag: setting it takes no lock, so a handler that interrupted a wait on
the same event cannot deadlock, as it can with a threading.Event, whose lock is not reentrant,
or a multiprocessing Event, whose set() waits for its sleepers to wake); the command's own
loop notices, saves what it has and exits with 128 + the signal number (130 for Ctrl-C). A second signal exits at once (no traceback), after `on_force` (e.g. killing
child processes). Handlers write with os.write: print() inside a handler can collide with a
print the main thread was doing.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Callable, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalSafeEvent:
    """What threading.Event offers (set, is_set, clear, wait), with a set() that takes no lock
    and so may be called from a signal handler; wait() polls every `poll_s` seconds."""

    def __init__(self, poll_s: float = 0.05):
        self._flag = False
        self.poll_s = poll_s

    def set(self) -> None:
        self._flag = True

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._flag:
            left = self.poll_s if deadline is None else min(self.poll_s, deadline - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)
        return True


class GracefulStop:
    """Installs SIGINT/SIGTERM handlers (main thread only); `requested` is a SignalSafeEvent."""

    def __init__(self, name: str, message: str = "stopping after saving what this process has", on_force: Optional[Callable[[], None]] = None):
        self.name = name
        self.message = message
        self.on_force = on_force
        self.requested = SignalSafeEvent()
        self.signum: Optional[int] = None
        self._previous: dict = {}

    @property
    def exit_status(self) -> int:
        """128 + the first signal's number (130 for SIGINT, 143 for SIGTERM); 0 if none came."""
        return 128 + self.signum if self.signum else 0

    def install(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            _say(f"\n[{self.name}] {signal.Signals(signum).name}: {self.message} (again to exit at once)\n")
            self.requested.set()
            return
        _say(f"[{self.name}] {signal.Signals(signum).name} again: exiting now, nothing more is saved\n")
        try:
            if self.on_force is not None:
                self.on_force()
        finally:
            os._exit(128 + (self.signum or signum))


def _say(text: str) -> None:
    try:
        os.write(2, text.encode())
    except OSError:
        pass


def ignore_stop_signals() -> None:
    """For child processes that the parent stops itself (`wsrl run`'s learner, actors and
    evaluator): a terminal's Ctrl-C reaches the whole process group, the parent decides."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def watch_parent(stop: threading.Event, poll_s: float = 0.5) -> None:
    """Sets `stop` when the parent process (multiprocessing) is gone, so a child of a killed
    `wsrl run` does not run on forever. A daemon thread."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        while not stop.is_set():
            if not parent.is_alive():
                stop.set()
                return
            stop.wait(poll_s)

    threading.Thread(target=watch, name="wsrl-watch-parent", daemon=True).start()


def watch_event(source, stop: threading.Event, poll_s: float = 0.2) -> None:
    """Copies a multiprocessing Event `source` into the threading Event `stop` by polling:
    nobody ever waits on `source`, so its set() from another process never blocks on a waiter
    (a multiprocessing Event's set() waits for its sleepers to wake)."""

    def watch():
        while not stop.is_set():
            if source.is_set():
                stop.set()
                return
            stop.wait(poll_s)

    threading.Thread(target=watch, name="wsrl-watch-stop", daemon=True).start()
