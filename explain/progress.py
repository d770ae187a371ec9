"""Progress of the long stages (each test batch's explanations, the sanity check's cascade), without Lightning.

A stage reports to a hook ``progress(label, done, total)``: as each step begins (``label``: the step now running,
``done``: steps finished of ``total``, None where unknown) and once at its end (``done == total``). ``Progress``
is such a hook: on a terminal a tqdm bar with the time left; in a log (a stream that is not a terminal) a plain
line at most every ``LOG_EVERY`` seconds, so that a log of a run of hours says where it stands without a line
per step, and a short run's log gets none.

The time left is the mean time per step so far times the steps left (tqdm's ``smoothing=0``): the steps differ
in cost (LIME's maps against Saliency's), but every test batch repeats the same steps, so the mean over the
batches so far is the right rate where a moving average of the last steps is not.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

from tqdm import tqdm

Hook = Callable[[str, int, Optional[int]], None]
LOG_EVERY = 60.0  # seconds between two plain lines in a log
# the plain line: what tqdm's bar says, less the bar (tqdm puts ", " before the postfix, the step's label)
LINE = "{desc}: {n_fmt}/{total_fmt} steps, {elapsed} elapsed, ~{remaining} left{postfix}"
OPEN_LINE = "{desc}: {n_fmt} steps, {elapsed} elapsed{postfix}"  # a stage of unknown length has no time left


def status(form: str, desc: str, label: str, done: int, total: int | None, elapsed: float) -> str:
    """``form`` (tqdm's ``bar_format`` fields) filled in for a stage at step ``done`` of ``total``."""
    return tqdm.format_meter(done, total, elapsed, prefix=desc, postfix=label, bar_format=form)


class Steps:
    """Counts a stage's steps for a hook (None: nobody listens): ``begin(label)`` as each starts, ``end()``."""

    def __init__(self, hook: Hook | None, total: int):
        self.hook, self.total, self.done = hook, total, 0

    def begin(self, label: str) -> None:
        if self.hook is not None:
            self.hook(label, self.done, self.total)
        self.done += 1

    def end(self) -> None:
        if self.hook is not None:
            self.hook("done", self.total, self.total)


class Progress:
    """A ``Hook`` that shows a stage's progress on ``stream`` (default: stderr, as tqdm's): a bar where the
    stream is a terminal, else a plain line at most every ``every`` seconds (default ``LOG_EVERY``)."""

    def __init__(self, desc: str, stream: TextIO | None = None, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.desc, self.stream, self.clock = desc, stream or sys.stderr, clock
        self.every = LOG_EVERY if every is None else every
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar: tqdm | None = None
        self.start = self.last = clock()

    def __call__(self, label: str, done: int, total: int | None) -> None:
        if self.interactive:
            if self.bar is None:
                self.bar = tqdm(total=total, desc=self.desc, file=self.stream, unit="step", smoothing=0,
                                leave=False, dynamic_ncols=True)
            self.bar.total = total
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(label)  # redraws
            return
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            print(status(OPEN_LINE if total is None else LINE, self.desc, label, done, total, now - self.start),
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
