"""Stop signals: SIGTERM and SIGUSR1 (what SLURM sends before it ends or requeues a job; torchrun
forwards SIGTERM to its workers) noted instead of fatal, and the places that act on them — the
trainer at a step boundary, and every long loop over images (validation, ``evaluate``,
``classify``, ``score``) between two batches (:func:`raise_if_stopped`). Below everything that loops."""

from __future__ import annotations

REQUEUE_STATUS = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, worth running again (a scheduler requeues on it)


class Stopped(Exception):
    """A stop signal arrived during a loop over images; it ended between two batches."""

    def __init__(self, signal_name: str):
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name


def received() -> str | None:
    """The stop signal this process received inside a :class:`StopSignals` block, or None."""
    return next((block._received for block in StopSignals._active if block._received), None)


def raise_if_stopped() -> None:
    """Between two batches of a loop over images: :class:`Stopped` when a stop signal was received."""
    signal_name = received()
    if signal_name is not None:
        raise Stopped(signal_name)


class StopSignals:
    """``with StopSignals() as stop:`` — SIGTERM and SIGUSR1 (what SLURM sends before it ends or
    requeues a job; torchrun forwards SIGTERM to its workers when it is stopped) set
    ``stop.received`` (the signal's name) instead of ending the process; the trainer stops at the
    next step boundary. Nested, the inner one shares the outer's handlers: the command line holds
    one for the whole command, so a second SIGTERM (torchrun's, after another rank stopped) cannot
    end a rank while it is still writing its checkpoint or saying why it stopped. Outside the main
    thread, where handlers cannot be set, it only notes what an outer one received.
    ``StopSignals(until_exit=True)`` (the command line's): once a stop was received, further stop
    signals stay ignored after the block, until the process exits — torchrun sends SIGTERM to the
    ranks still running when one exits, and a rank already stopping must exit with its own status."""

    NAMES = ("SIGTERM", "SIGUSR1")
    _active: list = []

    def __init__(self, until_exit: bool = False):
        self._received: str | None = None
        self.previous: dict = {}
        self.until_exit = until_exit

    @property
    def received(self) -> str | None:
        return self._received or next((outer._received for outer in StopSignals._active if outer is not self and outer._received), None)

    def __enter__(self) -> StopSignals:
        import signal
        import threading

        if not StopSignals._active and threading.current_thread() is threading.main_thread():
            for name in self.NAMES:
                if hasattr(signal, name):
                    self.previous[name] = signal.signal(getattr(signal, name), self._handle)
        StopSignals._active.append(self)
        return self

    def _handle(self, signum, frame) -> None:
        import signal

        self._received = self._received or signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        import signal

        StopSignals._active.remove(self)
        stopping = self.until_exit and self.received is not None
        for name, handler in self.previous.items():
            signal.signal(getattr(signal, name), signal.SIG_IGN if stopping else handler)
