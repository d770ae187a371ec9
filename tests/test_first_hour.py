"""What a new user hits in the first hour, through the command line: a config written for another class does not
set their class's options, an explicit class is never silently replaced by a checkpoint's, a batch read by
position and a one-class dataset get one-line errors that say what to do."""
import importlib
import inspect
import sys

import pytest
import torch
import yaml

from datamodules.batch import Batch, BatchUseError, collate
from tests.helpers import ROOT, run_here
from tests.test_bring_your_own import calls_dataset, readme_model

CALLS = {"class_path": "datamodules.AudioFolderDataModule",
         "init_args": {"root": "data/calls", "csv": "labels.csv", "file_column": "file", "label_column": "species",
                       "fold_column": "split", "train_folds": ["train"], "val_folds": ["val"], "test_folds": ["test"],
                       "sample_rate": 16000, "duration": 1.0}}


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """docs/own-model.md's model in a folder outside the repository, importable as ``my_models``."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "my_models.py").write_text(readme_model() + '''

class ByPosition(SmallCNN):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)
''')
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("my_models", None)


def printed_config(*args, cwd) -> tuple[dict, str]:
    proc = run_here("fit", *args, "--print_config", cwd=cwd)
    return yaml.safe_load(proc.stdout), proc.stderr


def defaults(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_a_users_class_gets_its_own_defaults_not_those_the_project_config_wrote_for_another(tmp_path, outside):
    (tmp_path / "calls.yaml").write_text(yaml.safe_dump(
        {"model": {"class_path": "my_models.SmallCNN", "init_args": {"num_classes": 3}}, "data": CALLS}))
    config, _ = printed_config("--config", "calls.yaml", cwd=tmp_path)
    from datamodules import AudioFolderDataModule
    my_models = importlib.import_module("my_models")  # the user's module, written by the fixture
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    # configs/default.yaml's lr (AudioClassifier's) and num_workers (ESC-50's) are not the user's classes' values
    assert model["lr"] == defaults(my_models.SmallCNN)["lr"] and model["num_classes"] == 3
    assert data["num_workers"] == defaults(AudioFolderDataModule)["num_workers"]
    assert data["batch_size"] == defaults(AudioFolderDataModule)["batch_size"]
    # a value given on the command line is the user's, whatever the order
    config, _ = printed_config("--model.init_args.lr", "0.5", "--config", "calls.yaml", cwd=tmp_path)
    assert config["model"]["init_args"]["lr"] == 0.5


def test_a_config_without_a_class_path_that_applies_to_another_class_says_so(tmp_path):
    from lightning_modules import SpectrogramTransformer
    config, err = printed_config("--config", str(ROOT / "configs" / "quickstart.yaml"),
                                 "--model.class_path", "lightning_modules.SpectrogramTransformer", cwd=tmp_path)
    quickstart = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())["model"]
    assert quickstart["lr"] != defaults(SpectrogramTransformer)["lr"]
    assert config["model"]["init_args"]["lr"] == quickstart["lr"]  # applied, and said in one line
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "quickstart.yaml" in notes[0] and f"lr={quickstart['lr']!r}" in notes[0]
    assert "SpectrogramTransformer" in notes[0] and "AudioClassifier" in notes[0]


def fake_checkpoint(path, class_path: str) -> str:
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": class_path, "num_classes": 10}}, path)
    return str(path)


def test_an_explicit_class_is_not_replaced_by_the_checkpoints(tmp_path, outside):
    ckpt = fake_checkpoint(tmp_path / "cnn.ckpt", "lightning_modules.AudioClassifier")
    with pytest.raises(AssertionError) as failed:
        run_here("test", "--ckpt_path", ckpt, "--model.class_path", "lightning_modules.SpectrogramTransformer",
                 "--trainer.logger", "false", cwd=tmp_path)
    message = str(failed.value)
    assert "failed (2)" in message and "Traceback" not in message
    assert "holds a model of class lightning_modules.AudioClassifier, not lightning_modules.SpectrogramTransformer" \
        in message
    # a user's checkpoint of one class with another user class named: the two differ, said first
    ckpt = fake_checkpoint(tmp_path / "mine.ckpt", "my_models.SmallCNN")
    with pytest.raises(AssertionError) as failed:
        run_here("test", "--ckpt_path", ckpt, "--model.class_path", "my_models.ByPosition",
                 "--trainer.logger", "false", cwd=tmp_path)
    assert "holds a model of class my_models.SmallCNN, not my_models.ByPosition" in str(failed.value)
    assert "--model.class_path my_models.SmallCNN" in str(failed.value)


def test_a_batch_is_read_by_name_and_a_position_is_an_error_naming_the_keys():
    batch = collate([{"waveform": torch.zeros(4), "target": 1, "filename": "a.wav"},
                     {"waveform": torch.ones(4), "target": 0, "filename": "b.wav"}])
    assert isinstance(batch, Batch) and batch["target"].tolist() == [1, 0] and list(batch.keys())[:2] == [
        "waveform", "target"]
    for use in (lambda: batch[0], lambda: tuple(batch)):
        with pytest.raises(BatchUseError, match='read it by name, batch\\["waveform"\\].*keys: waveform, target, '
                                                'filename'):
            use()


@pytest.mark.slow
def test_a_model_that_unpacks_the_batch_gets_one_line_through_fit(tmp_path, outside):
    calls_dataset(tmp_path / "data" / "calls")
    (tmp_path / "calls.yaml").write_text(yaml.safe_dump({"data": CALLS}))
    with pytest.raises(AssertionError) as failed:
        run_here("fit", "--config", "calls.yaml", "--model.class_path", "my_models.ByPosition",
                 "--model.init_args.num_classes", "3", "--data.init_args.num_workers", "0",
                 "--trainer.max_epochs", "1", "--trainer.logger", "false", cwd=tmp_path)
    errors = [line for line in str(failed.value).splitlines() if line.startswith("error:")]
    assert "Traceback" not in str(failed.value) and len(errors) == 1
    assert 'the batch is a dict, not a tuple' in errors[0] and "waveform, target" in errors[0]


@pytest.mark.slow
def test_one_class_of_data_or_a_one_class_head_says_a_classifier_needs_two(tmp_path, outside):
    calls_dataset(tmp_path / "data" / "calls")
    for other in ("frog", "owl"):  # a folder per class, with one class left
        for f in (tmp_path / "data" / "calls" / other).iterdir():
            f.unlink()
        (tmp_path / "data" / "calls" / other).rmdir()
    (tmp_path / "data" / "calls" / "labels.csv").unlink()
    common = ("--model.class_path", "my_models.SmallCNN", "--data.class_path", "datamodules.AudioFolderDataModule",
              "--data.root", "data/calls", "--data.sample_rate", "16000", "--data.duration", "1",
              "--trainer.max_epochs", "1", "--trainer.logger", "false")
    with pytest.raises(AssertionError) as failed:
        run_here("fit", *common, cwd=tmp_path)
    assert "holds one class ('crow')" in str(failed.value) and "at least two" in str(failed.value)
    assert "--model.num_classes 1" not in str(failed.value)
    with pytest.raises(AssertionError) as failed:
        run_here("fit", *common, "--model.init_args.num_classes", "1", cwd=tmp_path)
    assert "--model.num_classes must be at least 2, got 1" in str(failed.value)
    assert "Traceback" not in str(failed.value)


def test_an_unreadable_file_is_one_sentence(tmp_path):
    from datamodules.audio import AudioError, read_audio
    (tmp_path / "broken.wav").write_text("not audio")
    with pytest.raises(AudioError) as failed:
        read_audio(tmp_path / "broken.wav")
    assert ".." not in str(failed.value) and str(failed.value).endswith("replace it with a valid wav/flac file")


def test_a_memory_budget_above_the_gpus_is_refused_and_a_cpu_needs_none(monkeypatch):
    from types import SimpleNamespace

    from audio_xai.errors import UsageValueError
    from explain.batching import check_memory
    check_memory(1e9, "cpu")  # unused on a CPU (fixed batches): a laptop with less memory than the default runs
    # a GPU of 16 GiB, as torch would describe it
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=16 * 2**30))
    check_memory(16.0, torch.device("cuda", 0))
    with pytest.raises(UsageValueError, match="--explainer.memory_gb 16.5 is more than GPU cuda:0 has \\(16.0 GB\\)"):
        check_memory(16.5, torch.device("cuda", 0))


def test_a_worker_error_is_printed_as_it_was_raised():
    from datamodules.audio import AudioError
    from audio_xai.cli import one_line
    wrapped = AudioError("Caught AudioError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                         "last):\n  File 'x.py', line 1, in f\ndatamodules.audio.AudioError: cannot read audio file "
                         "a.wav (bad); replace it")
    assert one_line(wrapped) == "cannot read audio file a.wav (bad); replace it"


def test_where_options_come_from_follows_the_arguments_order_and_flags_without_values():
    from audio_xai.cli import option_sources
    sources = option_sources(["--print_config", "--model.class_path", "my.A", "--model.lr", "0.5", "--data=my.D"],
                             [str(ROOT / "configs" / "default.yaml")])
    model, data = sources["model"], sources["data"]
    assert model.named_class == ("my.A", "--model") and model.current == "my.A"
    assert model.options["lr"].kind == "argument" and model.options["lr"].written_for == "my.A"
    assert model.options["num_classes"].written_for == "lightning_modules.AudioClassifier"  # default.yaml's
    assert model.options["num_classes"].kind == "class" and data.named_class == ("my.D", "--data")


@pytest.mark.parametrize("given", ["FLOOR", "", "floor,clip_min"])
def test_a_wrong_choice_says_the_choices_in_one_line(given):
    """jsonargparse's own message for a Literal option (its parser the source), as the command prints it: the
    choices as the project's checks word them."""
    import argparse
    from typing import Literal

    from jsonargparse import ArgumentParser

    from audio_xai.cli import short_error
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--explainer.fill", type=Literal["floor", "clip_min", "clip_mean"])
    with pytest.raises(argparse.ArgumentError) as err:
        parser.parse_args([f"--explainer.fill={given}"])
    assert short_error(str(err.value)) == f"--explainer.fill: must be one of floor, clip_min, clip_mean, got {given!r}"
