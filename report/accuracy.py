"""The explained model's accuracy on the clips it explained, as its run recorded it (``run.json``'s ``accuracy``:
correct, clips, classes), and whether it is near chance: picks and margins of a model that does not classify
explain nothing about what it learnt.

Near chance: the exact (Clopper-Pearson) 95 % interval of the accuracy reaches down to chance, one in the number
of classes, or below: the accuracy is not shown to be above chance (at that confidence) on these clips.

Example:
    >>> a = Accuracy(correct=4, clips=12, classes=3)
    >>> a.near_chance, Accuracy(correct=11, clips=12, classes=3).near_chance
    (True, False)
    >>> a.text()
    'test accuracy 0.333 (4 of 12 clips; 95 % interval 0.099-0.651; chance 0.333)'
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .tables import ReportInputError, read_run

CONFIDENCE = 0.95
NOT_RECORDED = "accuracy not recorded (a run written before its run.json held it)"
WARNING = ("near chance (the exact 95 % interval of its accuracy reaches chance, one in the number of classes): the "
           "picks and margins describe explanations of a model that does not classify these clips")


@dataclass(frozen=True)
class Accuracy:
    correct: int
    clips: int
    classes: int

    @property
    def value(self) -> float:
        return self.correct / self.clips

    @property
    def chance(self) -> float:
        return 1 / self.classes

    def interval(self) -> tuple[float, float]:
        """The exact binomial interval of the accuracy at ``CONFIDENCE``."""
        from scipy.stats import binomtest
        ci = binomtest(self.correct, self.clips).proportion_ci(CONFIDENCE, method="exact")
        return float(ci.low), float(ci.high)

    @property
    def near_chance(self) -> bool:
        return self.interval()[0] <= self.chance

    def text(self) -> str:
        low, high = self.interval()
        return (f"test accuracy {self.value:.3f} ({self.correct} of {self.clips} clips; {CONFIDENCE * 100:.0f} % "
                f"interval {low:.3f}-{high:.3f}; chance {self.chance:.3f})")


def run_accuracy(results_csv: str | Path) -> Accuracy | None:
    """The accuracy the run of ``results_csv`` recorded; None where its run.json does not hold it."""
    found = read_run(results_csv).get("accuracy")
    if found is None:
        return None
    fields = ("correct", "clips", "classes")
    if not (isinstance(found, dict) and all(type(found.get(f)) is int for f in fields)
            and 0 <= found["correct"] <= found["clips"] and found["clips"] >= 1 and found["classes"] >= 2):
        raise ReportInputError(f"{Path(results_csv).with_name('run.json')}: accuracy must hold whole numbers "
                               f"correct <= clips (at least 1) and classes (at least 2), got {found!r}; give the "
                               f"run.json written by `main.py test --explain`")
    return Accuracy(*(found[f] for f in fields))


def group_accuracy(sources: list[str], found: dict[str, Accuracy | None]) -> dict:
    """What a group of rows from the runs ``sources`` says of its model's accuracy: ``text``, ``near_chance`` (any
    run's) and its ``warning``. Runs of one model on one clip set agree; where they do not, each is named, and the
    warning stands where any is near chance."""
    known = {s: found[s] for s in sources if found.get(s) is not None}
    texts = list(dict.fromkeys(a.text() for a in known.values()))
    if not texts:
        return {"text": NOT_RECORDED, "near_chance": False, "warning": ""}
    text = texts[0] if len(texts) == 1 else "; ".join(f"{Path(s).parent}: {a.text()}" for s, a in known.items())
    near = any(a.near_chance for a in known.values())
    return {"text": text, "near_chance": near, "warning": WARNING if near else ""}
