"""The accuracy of the model explained, beside its picks: the near-chance rule against the exact binomial interval
computed here from first principles, and what the report says of a model at chance and of a run that did not
record its accuracy."""
from __future__ import annotations

import json
import math

import pytest

from report.accuracy import Accuracy
from tests.helpers import run_here
from tests.test_report import row, write_run


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def exact_lower_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """The lower end of the Clopper-Pearson interval: the p at which P(X >= k) = (1 - confidence) / 2 (the tail
    grows with p), by bisection."""
    if k == 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if binomial_tail(k, n, mid) < (1 - confidence) / 2 else (lo, mid)
    return lo


def near_chance(correct: int, clips: int, classes: int) -> bool:
    return exact_lower_bound(correct, clips) <= 1 / classes


@pytest.mark.parametrize("clips, classes", [(12, 10), (12, 3), (40, 2), (80, 10)])
def test_near_chance_is_an_interval_that_reaches_chance(clips, classes):
    verdicts = {}
    for correct in range(clips + 1):
        if abs(exact_lower_bound(correct, clips) - 1 / classes) < 1e-9:
            continue  # at the boundary rounding decides
        verdicts[correct] = Accuracy(correct, clips, classes).near_chance
        assert verdicts[correct] == near_chance(correct, clips, classes), correct
    assert True in verdicts.values() and False in verdicts.values()  # both sides of the boundary were checked
    # one boundary: every accuracy below it is near chance, none above it
    first_above = min(k for k, near in verdicts.items() if not near)
    assert all(near == (k < first_above) for k, near in verdicts.items())


def test_the_report_flags_a_model_at_chance_and_says_where_accuracy_is_not_recorded(tmp_path):
    """Through the command line: one run at chance (a third of 12 clips right, 3 classes), and one written
    before runs recorded their accuracy."""
    runs = tmp_path / "runs"
    chance = write_run(runs / "chance", row("lime", "bin", 0.5, 4), row("lime", "minmax", 0.6, 10))
    (chance.parent / "run.json").write_text(json.dumps({"accuracy": {"correct": 4, "clips": 12, "classes": 3}}))
    write_run(runs / "old", row("lime", "bin", 0.5, 4, scenario="white"), row("lime", "minmax", 0.6, 10, scenario="white"))
    proc = run_here("report", str(runs), "--out", str(tmp_path / "report"), "--bootstrap", "0", cwd=tmp_path)
    text = proc.stdout
    clean, white = text.index("mel / clean: best mask"), text.index("mel / white: best mask")
    at_chance = text[clean:white] if clean < white else text[clean:]
    assert "test accuracy 0.333 (4 of 12 clips" in at_chance and "WARNING: the model is near chance" in at_chance
    old = text[white:clean] if white < clean else text[white:]
    assert "accuracy not recorded" in old and "near chance" not in old
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("class='warn'") == 1 and "accuracy not recorded" in page
    assert "**Warning: the model is near chance" in (tmp_path / "report" / "summary.md").read_text()


def test_a_bad_accuracy_record_names_its_file(tmp_path):
    run = write_run(tmp_path / "runs" / "bad", row("lime", "bin", 0.5, 4))
    (run.parent / "run.json").write_text(json.dumps({"accuracy": {"correct": 13, "clips": 12, "classes": 3}}))
    with pytest.raises(AssertionError) as failed:
        run_here("report", str(run.parent), "--out", str(tmp_path / "report"), "--bootstrap", "0", cwd=tmp_path)
    assert "run.json: accuracy must hold whole numbers" in str(failed.value) and "Traceback" not in str(failed.value)
