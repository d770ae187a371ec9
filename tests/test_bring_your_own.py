"""A model this repository has never seen, on data it has never seen, through the three commands of
docs/own-model.md ("Bring your own model and data"): its example model (its own front-end), written to a folder outside
the repository, trains on a CSV dataset of clips at several rates, channel counts and lengths built here, and
is explained with the study's methods and the controls, then reported."""
import json
import re

import numpy as np
import pytest
import soundfile as sf
import yaml

from tests.helpers import ROOT, read_csv, run_here

CLASSES = {"crow": 600.0, "frog": 1800.0, "owl": 4000.0}  # each class a tone in its own band, over noise


def readme_model() -> str:
    text = (ROOT / "docs" / "own-model.md").read_text()
    return re.search(r"```python\n(# my_models\.py\n.*?)```", text, re.S).group(1)


def calls_dataset(root) -> None:
    """21 clips: per class 4 train, 1 val and 2 test, at 8-48 kHz, mono or stereo, 0.7-1.4 s long."""
    rng = np.random.default_rng(0)
    rows = []
    for label, freq in CLASSES.items():
        for i, split in enumerate(["train"] * 4 + ["val"] + ["test"] * 2):
            rate, seconds, channels = (8000, 22050, 44100, 48000)[i % 4], 0.7 + 0.1 * i, 1 + i % 2
            t = np.arange(int(rate * seconds)) / rate
            wave = 0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) + 0.05 * rng.standard_normal(len(t))
            name = f"{label}/{i:04d}.{'flac' if i % 3 == 0 else 'wav'}"
            (root / label).mkdir(parents=True, exist_ok=True)
            sf.write(str(root / name), np.stack([wave] * channels, 1).astype(np.float32), rate)
            rows.append(f"{name},{label},{split}")
    (root / "labels.csv").write_text("file,species,split\n" + "\n".join(rows) + "\n")


@pytest.mark.slow
def test_an_outside_model_on_outside_data_is_trained_explained_and_reported(tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "my_models.py").write_text(readme_model())
    monkeypatch.syspath_prepend(str(outside))  # as PYTHONPATH would: the class is named by its import path
    calls_dataset(tmp_path / "data" / "calls")
    config = {"trainer": {"default_root_dir": "runs/calls", "max_epochs": 4, "logger": False},
              "model": {"class_path": "my_models.SmallCNN", "init_args": {"num_classes": 3, "channels": 8}},
              "data": {"class_path": "datamodules.AudioFolderDataModule",
                       "init_args": {"root": "data/calls", "csv": "labels.csv", "file_column": "file",
                                     "label_column": "species", "fold_column": "split", "train_folds": ["train"],
                                     "val_folds": ["val"], "test_folds": ["test"], "sample_rate": 16000,
                                     "duration": 1.0, "batch_size": 6, "num_workers": 0}}}
    (tmp_path / "calls.yaml").write_text(yaml.safe_dump(config))
    run_here("fit", "--config", "calls.yaml", cwd=tmp_path)
    run_here("test", "--config", "calls.yaml", "--ckpt_path", "runs/calls/best.ckpt", "--explain", "study,controls",
             "--explainer.lime_samples", "20", "--explainer.shap_background_per_class", "1",
             "--explainer.examples", "1", "--explainer.masks", "[minmax,bin,topK_30_pos]", "--explainer.sanity", "true",
             "--explainer.sanity_clips", "2", cwd=tmp_path)
    run_here("report", "runs/calls", "--out", "runs/calls/report", "--bootstrap", "200", cwd=tmp_path)

    out = next((tmp_path / "runs" / "calls").glob("test-*/explain"))
    rows = read_csv(out / "results.csv")
    methods = ["saliency", "gradcam", "lime", "shap", "random", "energy"]
    # scored on the spectrograms and on what is heard of them, through the model's own inverse and front-end
    assert sorted({r["method"] for r in rows}) == sorted(methods) and len(rows) == 6 * 3 * 2
    assert {r["scored"] for r in rows} == {"spectrogram", "heard"} and (out / "distortion.csv").is_file()
    assert {r["model"] for r in rows} == {"SmallCNN"} and {r["n"] for r in rows} == {"6"}  # 2 test clips a class
    run = json.loads((out / "run.json").read_text())
    assert run["classes"] == sorted(CLASSES)  # the data's names, by class number
    assert run["options"]["gradcam"]["layer"] == "4"  # the last convolution of the Sequential
    assert run["sanity"]["layers"] == ["8", "4", "1"]  # its Linear and convolutions, from the output down
    first = sorted(read_csv(out / "per_clip.csv"), key=lambda r: r["clip"])[0]["clip"]
    example = out / "examples" / first.rsplit(".", 1)[0].replace("/", "__")
    audio, rate = sf.read(str(example / "original.wav"))
    assert rate == 16000 and len(audio) == 16000  # the front-end's rate, the data's duration
    assert (example / "shap" / "topK_30_pos_in.wav").is_file() and (example / "gradcam" / "bin.png").is_file()
    # a checkpoint does not choose the code that runs: its class, from outside the project, must be named
    with pytest.raises(AssertionError) as failed:
        run_here("test", "--ckpt_path", "runs/calls/best.ckpt", "--trainer.logger", "false", cwd=tmp_path)
    assert "failed (2)" in str(failed.value) and "Traceback" not in str(failed.value)
    assert "holds a model of class my_models.SmallCNN" in str(failed.value)
    report = tmp_path / "runs" / "calls" / "report"
    assert (report / "report.html").is_file() and "What you hear" in (report / "report.html").read_text()
    assert {r["model"] for r in read_csv(report / "summary.csv")} == {"SmallCNN"}
