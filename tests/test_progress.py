"""Progress of the long stages: every step of each test batch's explanations and of the sanity check's cascade
is reported; a terminal gets a bar, a log at most a line a minute (none in a short run)."""
from __future__ import annotations

import io
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

import explain.progress
from callbacks import ExplainCallback
from explain.pipeline import ExplanationPipeline
from explain.progress import Progress
from lightning_modules import AudioClassifier
from tests.helpers import tiny_cnn


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Recorder:
    """A progress hook that keeps what it heard."""

    def __init__(self):
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, label, done, total):
        self.calls.append((label, done, total))


def test_the_pipeline_reports_each_methods_maps_masks_and_curves():
    model = tiny_cnn(num_bins=32, num_classes=3, width=4)
    pipe = ExplanationPipeline(model, ["saliency", "random"], masks=("bin", "topK_5"), curves=True,
                               fractions=(0.0, 0.5, 1.0), batch_size=4)
    heard = Recorder()
    pipe.explain(-60 + 20 * torch.randn(2, 1, 64, 32), ["a", "b"], progress=heard)
    steps = [f"{m} {part}" for m in ("saliency", "random") for part in ("maps", "masks", "curves")]
    assert heard.calls == [(label, i, 6) for i, label in enumerate(steps)] + [("done", 6, 6)]


def test_a_terminal_gets_a_bar_with_every_step():
    screen = Terminal()
    shown = Progress("explaining", stream=screen)
    for i, label in enumerate(["lime maps", "lime masks"]):
        shown(label, i, 4)
    shown.close()
    text = screen.getvalue()
    assert "explaining" in text and "lime maps" in text and "lime masks" in text and "1/4" in text


def test_a_log_gets_a_plain_line_at_most_every_interval_with_the_time_left():
    log = io.StringIO()
    now = [0.0]
    shown = Progress("sanity check", stream=log, every=60.0, clock=lambda: now[0])
    shown("lime, trained model", 0, 10)
    now[0] = 59.0
    shown("shap, trained model", 1, 10)
    assert log.getvalue() == ""  # neither a bar nor a line within the first interval
    now[0] = 120.0
    shown("lime, random down to head (1/4 layers)", 2, 10)
    now[0] = 150.0
    shown("shap, random down to head (1/4 layers)", 3, 10)  # within a minute of the last line
    lines = log.getvalue().splitlines()
    # 2 steps in 120 s: 60 s a step, 8 left
    assert lines == ["sanity check: 2/10 steps, 02:00 elapsed, ~08:00 left, lime, random down to head (1/4 layers)"]
    assert "\r" not in log.getvalue()


def test_under_lightnings_rich_bar_a_stage_is_a_task_of_its_display():
    """Rich's live display swallows a tqdm bar written meanwhile: the stage joins the display instead (Lightning
    uses its Rich bar where rich is installed)."""
    console, progress = pytest.importorskip("rich.console"), pytest.importorskip("rich.progress")
    from callbacks.progress import RichTask, stage_progress
    live = progress.Progress(console=console.Console(file=Terminal(), force_terminal=True), auto_refresh=False)
    bar = RichProgressBar()
    bar.progress = live  # what the bar holds once its display has started
    assert isinstance(stage_progress(SimpleNamespace(is_global_zero=True, progress_bar_callback=bar), "x"), RichTask)
    assert stage_progress(SimpleNamespace(is_global_zero=False, progress_bar_callback=bar), "x") is None
    assert isinstance(stage_progress(SimpleNamespace(is_global_zero=True, progress_bar_callback=TQDMProgressBar()),
                                     "x"), Progress)

    now = [0.0]
    shown = RichTask(live, "explaining", clock=lambda: now[0])
    shown("batch 1/2: lime maps", 0, 4)
    now[0] = 30.0
    shown("batch 1/2: lime masks", 1, 4)
    task = live.tasks[0]
    # 1 step in 30 s, 3 left
    assert (task.completed, task.total, task.description) == (1, 4, "explaining, batch 1/2: lime masks, ~01:30 left")
    shown.close()
    assert live.tasks == []


def waves(n: int = 6, seconds: float = 0.5, rate: int = 32000) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"waveform": 0.1 * torch.randn(int(seconds * rate), generator=g), "target": i % 3, "index": i,
             "filename": f"{i}.wav"} for i in range(n)]


def explain_run(tmp_path, stream, monkeypatch) -> None:
    """A test loop of 2 batches, two methods, two masks and the sanity check on a tiny model, with ``stream``
    as stderr and Lightning's tqdm bar (its Rich bar, where rich is installed, takes a terminal on stdout)."""
    monkeypatch.setattr("sys.stderr", stream)
    torch.manual_seed(0)
    model = AudioClassifier(width=4, num_classes=3)
    callback = ExplainCallback("saliency,random", masks=["bin", "topK_5"], examples=0, cache=False,
                               scored="spectrogram", sanity=True, sanity_clips=3, sanity_layers=["head", "fc1"],
                               output_dir=str(tmp_path / "explain"), fractions=[0.0, 1.0])
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, callbacks=[callback, TQDMProgressBar()],
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.test(model, torch.utils.data.DataLoader(waves(), batch_size=3))


@pytest.mark.slow
def test_a_run_on_a_terminal_shows_each_step_and_in_a_log_nothing(tmp_path, monkeypatch):
    screen = Terminal()
    explain_run(tmp_path / "terminal", screen, monkeypatch)
    text = screen.getvalue()
    for batch in (1, 2):
        for step in ("saliency maps", "saliency masks", "saliency curves", "random maps", "random curves"):
            assert f"batch {batch}/2: {step}" in text
    assert "explaining" in text and "sanity check" in text
    for layer in ("head", "fc1"):
        assert f"saliency, random down to {layer} (" in text

    monkeypatch.setattr(explain.progress, "LOG_EVERY", float("inf"))  # a run of any length is short
    log = io.StringIO()
    explain_run(tmp_path / "log", log, monkeypatch)
    assert "explaining" not in log.getvalue() and "sanity check" not in log.getvalue()
