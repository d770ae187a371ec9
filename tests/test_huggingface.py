"""Hugging Face classifiers through the model contract (lightning_modules/huggingface.py): AST's filter banks in torch
against its feature extractor's own, its inverse, the waveform classifier's exact inverse, every method on both,
the input they refuse or say what they do with, and one tiny AST and one tiny wav2vec 2.0 saved by save_pretrained,
fine-tuned and explained end to end through the command line."""
import json
import logging
import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from audio_xai.errors import UsageError
from explain import METHODS, make_method
from explain.heard import Sound
from lightning_modules.features import MeldB
from lightning_modules.hf_features import KaldiFbank
from lightning_modules.huggingface import HuggingFaceClassifier
from tests.helpers import ROOT, read_csv, run_here, tiny_ast_folder, tiny_wav2vec2_folder, tone_and_noise

FBANK_BOUND = 1e-3  # of AST's normalised scale (2 std = 9.1 natural-log units); measured: 3.3e-5


def extractor_values(extractor, wave: torch.Tensor, numpy: bool, monkeypatch) -> torch.Tensor:
    """The feature extractor's normalised filter banks of ``wave``: its torchaudio path, or its numpy path (what
    it runs where torchaudio is missing)."""
    import transformers.models.audio_spectrogram_transformer.feature_extraction_audio_spectrogram_transformer as fe
    with monkeypatch.context() as m:
        if numpy:
            m.setattr(fe, "is_speech_available", lambda: False)
            extractor = type(extractor)(**extractor.to_dict())  # builds its numpy filters now
        return torch.as_tensor(np.asarray(extractor(wave.numpy(), sampling_rate=16000)["input_values"][0]))


@pytest.mark.parametrize("bands,frames", [(128, 256), (64, 160)])
@pytest.mark.parametrize("numpy", [False, True], ids=["torchaudio", "numpy"])
def test_the_torch_filter_banks_match_the_feature_extractor(bands, frames, numpy, monkeypatch):
    """Every frame of the model's input, the clip's and the padding's, within FBANK_BOUND of what the extractor
    computes from the clip padded with silence to the model's frames; a padded frame is silence, (ln eps - mean) /
    (2 std), not the extractor's own padding (0 before normalising, AudioSet's mean level)."""
    from transformers import ASTFeatureExtractor
    from lightning_modules.huggingface import ASTNet
    extractor = ASTFeatureExtractor(num_mel_bins=bands, max_length=frames)
    wave = tone_and_noise(1.5)
    front = KaldiFbank(16000, bands, frames)
    ours = ASTNet(torch.nn.Identity(), extractor.mean, extractor.std).inputs(front(wave[None]))[0]
    samples = 400 + (frames - 1) * 160
    theirs = extractor_values(extractor, torch.nn.functional.pad(wave, (0, samples - len(wave))), numpy, monkeypatch)
    assert ours.shape == theirs.shape == (frames, bands)
    assert (ours - theirs).abs().max() < FBANK_BOUND
    silence = (math.log(np.finfo(np.float32).eps) - extractor.mean) / (2 * extractor.std)
    assert torch.allclose(ours[-3:], torch.tensor(silence, dtype=ours.dtype), atol=1e-6)  # past the clip
    assert extractor_values(extractor, wave, numpy, monkeypatch)[-1].unique().tolist() == \
        pytest.approx([-extractor.mean / (2 * extractor.std)])  # the extractor's own padding
    mel = lambda hz: 1127 * np.log(1 + hz / 700)  # Kaldi's scale: the bands' centres lie evenly on it
    centres = mel(20) + (mel(8000) - mel(20)) * np.arange(1, bands + 1) / (bands + 1)
    np.testing.assert_allclose(front.bin_frequencies().numpy(), 700 * (np.exp(centres / 1127) - 1), rtol=1e-5)


@pytest.mark.filterwarnings("ignore:At least one mel filterbank")  # MeldB's HTK bands at 128: its lowest are empty
def test_the_filter_bank_inverse():
    """Given the clip's own STFT power, the inverse's frames, overlap-add and de-emphasis give the clip back; from
    the filter banks (the power spread back over the bands), the round trip is no further from what was scored
    than the project's own mel front-end's with the same bands."""
    wave = tone_and_noise(2.5)[None]
    front = KaldiFbank(16000, 128, 256)
    x, phase = front(wave, return_phase=True)
    padded = torch.nn.functional.pad(wave, (0, front.samples - wave.shape[-1]))
    spectrum = torch.fft.rfft(front._prepare(padded.unfold(-1, 400, 160)), n=512)
    back = front.wave_of(spectrum.abs().pow(2).transpose(-1, -2), phase, wave.shape[-1])
    start = 40  # the clip's first 2.5 ms, under one frame's faint window edge, are floored on purpose
    error = (back - wave)[:, start:].norm() / wave[:, start:].norm()
    assert error < 0.03  # measured 0.014: what lies below 20 Hz and a drift of the frames' means are lost
    heard = front(front.inverse(x, phase, wave.shape[-1]))
    mel = MeldB(16000, n_fft=512, hop_length=160, n_mels=128, f_min=20.0, f_max=8000.0)
    y, mel_phase = mel(wave, return_phase=True)
    lsd = lambda a, b: (a - b).pow(2).mean().sqrt()
    assert lsd(x, heard) < lsd(y, mel(mel.inverse(y, mel_phase, wave.shape[-1])))  # measured 1.5 dB against 4.1


def test_ast_hears_what_its_feature_extractor_gives(tiny_ast):
    """The classifier on a waveform (its front-end and spectrogram model) against the transformers model on the
    extractor's values of the clip padded with silence."""
    from transformers import AutoFeatureExtractor
    model = HuggingFaceClassifier(str(tiny_ast)).eval()
    wave = torch.stack([tone_and_noise(0.9, seed=s) for s in range(2)])
    padded = torch.nn.functional.pad(wave, (0, model.features.samples - wave.shape[-1]))
    inputs = AutoFeatureExtractor.from_pretrained(tiny_ast)(list(padded.numpy()), sampling_rate=16000,
                                                             return_tensors="pt")["input_values"]
    with torch.no_grad():
        torch.testing.assert_close(model(wave), model.net.model(inputs).logits, atol=1e-4, rtol=1e-4)
    assert model.model_label == "ast" and model.num_classes == 5


def test_the_waveform_classifier_hears_its_spectrogram_exactly(tiny_wav2vec2):
    """Its spectrogram model, with the clip's phase, is the network on the extractor's values of the clip; the
    front-end's inverse gives the clip back."""
    from transformers import AutoFeatureExtractor
    model = HuggingFaceClassifier(str(tiny_wav2vec2)).eval()
    wave = tone_and_noise(1.0)[None]
    inputs = AutoFeatureExtractor.from_pretrained(tiny_wav2vec2)(wave[0].numpy(), sampling_rate=16000,
                                                                 return_tensors="pt")["input_values"]
    with torch.no_grad():
        x, phase = model.features(wave, return_phase=True)
        with model.net.clip_phase(phase, wave.shape[-1]):
            heard = model.net(x.repeat(3, 1, 1, 1))
        expected = model.net.model(inputs).logits
    torch.testing.assert_close(heard, expected.expand(3, -1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.features.inverse(x, phase, wave.shape[-1]), wave, atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError, match="clip_phase"):
        model.net(x)


REFUSED = {"ast": {"gradcam": "gradcam needs a convolution .* ASTNet offers none \\(an attention model",
                   "deeplift": "deeplift needs every nonlinearity", "shap": "shap \\(Deep SHAP\\) needs every"},
           "wav2vec2": {"gradcam": "gradcam needs a convolution .* WaveformNet offers none \\(a waveform model",
                        "deeplift": "deeplift needs every nonlinearity", "shap": "shap \\(Deep SHAP\\) needs every",
                        "attention": "attention \\(rollout\\) .* WaveformNet does not \\(it attends over frames"}}
SMALL = {"lime": {"num_samples": 10}, "smoothgrad": {"samples": 2}, "ig": {"steps": 2}, "gradshap": {"samples": 2},
         "occlusion": {"window": [32, 32], "stride": [32, 32]}}


@pytest.fixture(scope="module")
def models(tiny_ast, tiny_wav2vec2):
    """Each model with one clip (and its Sound) and a background."""
    out = {}
    for name, folder in (("ast", tiny_ast), ("wav2vec2", tiny_wav2vec2)):
        model = HuggingFaceClassifier(str(folder)).eval()
        with torch.no_grad():
            x, phase = model.features(torch.stack([tone_and_noise(0.9, seed=s) for s in range(3)]), return_phase=True)
        out[name] = model, x, Sound(phase, int(0.9 * 16000))
    return out


@pytest.mark.parametrize("kind", ["ast", "wav2vec2"])
# an interpreter (L-MAC) is a fit of its own for each classifier: tests/test_lmac.py trains and explains them
@pytest.mark.parametrize("name", sorted(n for n, cls in METHODS.items() if not cls.needs_checkpoint))
def test_every_method_explains_each_kind_or_refuses_with_its_reason(models, kind, name):
    from explain.pipeline import ExplanationPipeline
    model, x, sound = models[kind]
    net = model.spectrogram_model
    with ExplanationPipeline._on_clip(net, sound):
        if name in REFUSED[kind]:
            with pytest.raises(UsageError, match=REFUSED[kind][name]):
                make_method(name, net, batch_size=8, **SMALL.get(name, {})).check_model(x[:1])
            return
        method = make_method(name, net, batch_size=8, **SMALL.get(name, {}))
        method.check_model(x[:1])
        if method.needs_background:
            method.set_background(x[1:])
        with torch.enable_grad():
            maps = method.attribute(x[:1], net(x[:1]).argmax(1), ids=["a"])
    assert maps.shape == x[:1].shape and torch.isfinite(maps).all() and (maps != 0).any()


def test_the_pipeline_explains_a_model_that_hears_through_the_phase_one_clip_at_a_time(models):
    from explain.pipeline import ExplanationPipeline
    model, x, sound = models["wav2vec2"]
    pipe = ExplanationPipeline(model.spectrogram_model, ["saliency"], scored="spectrogram,heard",
                               features=model.features, batch_size=8)
    assert pipe.one_clip_at_a_time
    with pytest.raises(ValueError, match="one clip at a time"):
        pipe.explain(x[:2], ["a", "b"], sound)
    one = Sound(sound.phase[1:2], sound.length)
    out = pipe.explain(x[1:2], ["b"], one)
    with torch.no_grad(), model.net.clip_phase(one.phase, one.length):
        assert torch.equal(out.pred, model.net(x[1:2]).argmax(1))


def test_the_sanity_check_randomises_each_kind_one_clip_at_a_time(models):
    """The layers found (head, then the encoder's layers from the last) can all be re-initialised; the pipeline's
    randomisation test hears each clip through its own phase."""
    from explain.pipeline import ExplanationPipeline
    from lightning_modules.contract import check_sanity_layers
    ast, wav2vec2 = models["ast"][0].net, models["wav2vec2"][0].net
    assert ast.sanity_layers == ("model.classifier", "model.audio_spectrogram_transformer.layers.1",
                                 "model.audio_spectrogram_transformer.layers.0")
    assert wav2vec2.sanity_layers[:3] == ("model.classifier", "model.projector", "model.wav2vec2.encoder.layers.1")
    for net in (ast, wav2vec2):
        check_sanity_layers(net, net.sanity_layers)
    _, x, sound = models["wav2vec2"]
    pipe = ExplanationPipeline(wav2vec2, ["saliency"], batch_size=8)
    rows = pipe.sanity(x[:2], torch.zeros(2, dtype=torch.long), ["a", "b"], ("model.classifier",),
                       sound=Sound(sound.phase[:2], sound.length))
    assert {r.layer for r in rows} == {"model.classifier"} and {r.n for r in rows} == {2}


def test_the_quickstart_config_builds_a_tiny_ast_that_takes_the_quickstart_clips():
    import yaml
    from tests.helpers import quickstart_seconds
    init = yaml.safe_load((ROOT / "configs" / "quickstart-ast.yaml").read_text())["model"]["init_args"]
    model = HuggingFaceClassifier(**init)
    assert model.kind == "ast" and model.num_classes == 10 and model.features.frames == 256
    model.features.check_length(round(16000 * quickstart_seconds()))  # 248 of its 256 frames


# -- input the classifier refuses, or says what it does with -----------------------------------------------------
def test_a_new_head_when_the_classes_differ_said_with_both_counts(tiny_ast, caplog):
    with caplog.at_level(logging.WARNING):
        model = HuggingFaceClassifier(str(tiny_ast), num_classes=3)
    assert "has 5 labels but --model.init_args.num_classes is 3" in caplog.text and "new head of 3" in caplog.text
    assert model.num_classes == 3 and model.hparams.num_classes == 3
    with torch.no_grad():
        assert model(tone_and_noise(0.5)[None]).shape == (1, 3)


def test_a_base_model_without_a_head_gets_one(tiny_wav2vec2, tmp_path, caplog):
    from transformers import AutoConfig, AutoFeatureExtractor, Wav2Vec2Model
    Wav2Vec2Model(AutoConfig.from_pretrained(tiny_wav2vec2)).save_pretrained(tmp_path)  # as facebook/wav2vec2-base
    AutoFeatureExtractor.from_pretrained(tiny_wav2vec2).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        model = HuggingFaceClassifier(str(tmp_path), num_classes=4)
    assert "the saved model has no classification head; it gets a new head of 4 outputs" in caplog.text
    assert model.num_classes == 4 and model.kind == "waveform"


def test_folders_that_hold_no_model_or_no_feature_extractor(tiny_ast, tmp_path):
    from transformers import ASTFeatureExtractor, AutoModelForAudioClassification
    only_model, only_extractor = tmp_path / "model", tmp_path / "extractor"
    AutoModelForAudioClassification.from_pretrained(tiny_ast).save_pretrained(only_model)
    ASTFeatureExtractor().save_pretrained(only_extractor)
    with pytest.raises(UsageError, match=r"model has no preprocessor_config.json \(the feature extractor\); save"):
        HuggingFaceClassifier(str(only_model))
    with pytest.raises(UsageError, match=r"has no config.json \(the model's config\) and no weights"):
        HuggingFaceClassifier(str(only_extractor))
    with pytest.raises(UsageError, match="is a file; give the folder"):
        HuggingFaceClassifier(str(only_model / "config.json"))


def test_a_model_that_is_not_an_audio_classifier(tmp_path):
    from transformers import BertConfig, BertModel, Wav2Vec2FeatureExtractor
    BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8)).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor().save_pretrained(tmp_path)
    with pytest.raises(UsageError, match="a bert model is not an audio classifier"):
        HuggingFaceClassifier(str(tmp_path))
    with pytest.raises(UsageError, match="must name a model_type that transformers knows"):
        HuggingFaceClassifier({"hidden_size": 8})


def test_without_transformers_one_line_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(UsageError) as err:
        HuggingFaceClassifier("any")
    assert "needs the transformers package: pip install 'audio-xai[hf]'" in str(err.value)
    assert "\n" not in str(err.value)


def with_data(model, rate: int, duration: float, classes: int = 5):
    model._trainer = SimpleNamespace(datamodule=SimpleNamespace(
        num_classes=classes, root="data", hparams=SimpleNamespace(sample_rate=rate, duration=duration)))
    return model


def test_data_at_another_rate_is_resampled_and_said(tiny_ast, caplog):
    """The data at 32 kHz: the front-end takes it (a warning says so), resamples it to the model's 16 kHz, and
    its inverse gives 32 kHz audio of the clip's length."""
    model = with_data(HuggingFaceClassifier(str(tiny_ast)), 32000, 0.9)
    with caplog.at_level(logging.WARNING):
        model.setup("fit")
    assert "the data is at 32000 Hz and the model's feature extractor at 16000 Hz" in caplog.text
    wave = tone_and_noise(0.9, rate=32000)[None]
    x, phase = model.features(wave, return_phase=True)
    torch.testing.assert_close(x, KaldiFbank(16000, 32, 100)(AF.resample(wave, 32000, 16000)))
    assert model.features.inverse(x, phase, wave.shape[-1]).shape == wave.shape


def test_a_clip_longer_than_the_model_takes(tiny_ast):
    model = with_data(HuggingFaceClassifier(str(tiny_ast)), 16000, 2.0)
    with pytest.raises(UsageError, match=r"--data.duration 2: clips of 2.00 s are longer than the model takes, "
                                         r"100 frames \(1.01 s; .*--data.duration 1.01"):
        model.setup("fit")
    with pytest.raises(UsageError, match="longer than the model takes"):
        model.features(torch.zeros(1, 17000))


# -- end to end ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_hugging_face_classifiers_are_fine_tuned_and_explained_through_the_command_line(quickstart_run,
                                                                                            tmp_path, caplog):
    """A tiny AST (overlapping patches, 5 saved labels for the data's 10 classes) and a tiny wav2vec 2.0, saved by
    save_pretrained, each fitted on the quickstart data (32 kHz: resampled inside) from the AST quickstart config
    with the folder in its place, explained with every method that applies on both scored inputs, and reported."""
    data = quickstart_run / "data" / "quickstart"
    folders = {"ast": tiny_ast_folder(tmp_path / "ast", max_length=256),
               "wav2vec2": tiny_wav2vec2_folder(tmp_path / "w2v")}
    methods = {"ast": "saliency,ig,lime,attention,controls", "wav2vec2": "saliency,ig,lime,controls"}
    options = json.dumps({"lime": {"num_samples": 12}, "ig": {"steps": 4}})
    for kind, folder in folders.items():
        configs = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--config",
                   str(ROOT / "configs" / "quickstart-ast.yaml"), "--model.init_args.pretrained", str(folder),
                   "--data.root", str(data), "--trainer.logger", "false", "--trainer.default_root_dir", f"runs/{kind}"]
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            run_here("fit", *configs, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
                     "--trainer.limit_val_batches", "1", cwd=tmp_path)
        assert "the data is at 32000 Hz and the model's feature extractor at 16000 Hz" in caplog.text
        assert "the saved model has 5 labels but --model.init_args.num_classes is 10" in caplog.text
        run_here("test", *configs, "--ckpt_path", f"runs/{kind}/best.ckpt", "--explain", methods[kind],
                 "--explainer.options", options, "--explainer.scored", "spectrogram,heard", "--explainer.examples", "1",
                 "--explainer.masks", "[minmax,topK_30_pos]", "--data.batch_size", "3",
                 "--trainer.limit_test_batches", "1", cwd=tmp_path)
        run_here("report", f"runs/{kind}", "--out", f"runs/{kind}/report", "--bootstrap", "50", cwd=tmp_path)
        out = next((tmp_path / "runs" / kind).glob("test-*/explain"))
        rows = read_csv(out / "results.csv")
        names = methods[kind].replace("controls", "random,energy").split(",")
        assert {(r["method"], r["scored"]) for r in rows} == {(m, s) for m in names for s in ("spectrogram", "heard")}
        assert {r["model"] for r in rows} == {kind} and {r["n"] for r in rows} == {"3"}
        assert all(math.isfinite(float(r["FF"])) for r in rows) and (out / "distortion.csv").is_file()
        example = next((out / "examples").iterdir())
        assert (example / "original.wav").is_file() and (example / names[-3] / "topK_30_pos_in.wav").is_file()
        report = tmp_path / "runs" / kind / "report" / "report.html"
        assert report.is_file() and "What you hear" in report.read_text()
    # a folder that cannot be loaded ends the command with one line
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssertionError) as failed:
        run_here("fit", "--config", str(ROOT / "configs" / "quickstart-ast.yaml"), "--model.init_args.pretrained",
                 str(tmp_path / "empty"), "--trainer.logger", "false", cwd=tmp_path)
    assert "failed (2)" in str(failed.value) and "Traceback" not in str(failed.value)
    assert "has no config.json" in str(failed.value)
