"""Where a long stage of the test loop shows its progress (``explain.progress``): with Lightning's progress bar.

Lightning's Rich bar (its default where rich is installed) holds the terminal in a live display that swallows
any other bar written meanwhile, so there the stage is a task of that display; with Lightning's tqdm bar, or on a
stream that is not a terminal, it is ``explain.progress.Progress``. Rank 0 alone shows it, and nothing shows it
where Lightning's bar is off (``--trainer.enable_progress_bar false``)."""
from __future__ import annotations

import time
from typing import Callable

from lightning.pytorch.callbacks import RichProgressBar

from explain.progress import Hook, Progress, status

# the task's description: Rich's own columns show the count and a time left from the last 30 s alone, unknown
# while each step takes longer; this one is the stage's mean (explain/progress.py)
TASK = "{desc}{postfix}, ~{remaining} left"
OPEN_TASK = "{desc}{postfix}"


class RichTask:
    """A ``Hook`` that shows a stage as a task of a live ``rich.progress.Progress``."""

    def __init__(self, progress, desc: str, clock: Callable[[], float] = time.monotonic):
        self.progress, self.desc, self.clock = progress, desc, clock
        self.task = None
        self.start = clock()

    def __call__(self, label: str, done: int, total: int | None) -> None:
        if self.task is None:
            self.task = self.progress.add_task(self.desc, total=float("inf") if total is None else total)
        text = status(OPEN_TASK if total is None else TASK, self.desc, label, done, total, self.clock() - self.start)
        # drawn now: Lightning's display redraws on its own batches alone
        self.progress.update(self.task, completed=done, description=text, refresh=True)

    def close(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.progress.refresh()
            self.task = None


def stage_progress(trainer, desc: str) -> Hook | None:
    """A progress hook for a stage named ``desc`` (with a ``close()``), or None where nothing is shown."""
    bar = trainer.progress_bar_callback
    if not trainer.is_global_zero or bar is None or not bar.is_enabled:
        return None
    live = getattr(bar, "progress", None) if isinstance(bar, RichProgressBar) else None
    if live is not None and live.console.is_terminal:
        return RichTask(live, desc)
    return Progress(desc)
