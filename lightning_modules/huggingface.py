"""Hugging Face audio classifiers through the model contract (``contract.py``): trained with ``fit``, explained
with ``test --explain``, like Cnn14.

``--model.class_path lightning_modules.huggingface.HuggingFaceClassifier --model.init_args.pretrained DIR_OR_ID``
loads a model and its feature extractor saved with ``save_pretrained`` (a folder, or a Hub id where the machine
has a network; ``transformers`` is the optional extra ``hf``). Two kinds are explained:

- AST (``ASTForAudioClassification``): the front-end is its feature extractor in torch (``KaldiFbank``: Kaldi
  filter banks in dB, the clip padded with silence to the model's frames), the spectrogram model turns dB into
  the extractor's normalised values and runs the network (``ASTNet``). The masks' -100 dB floor lies below the
  filter banks' own floor (-69.2 dB, Kaldi's eps) and is read as it: silence, which on AST's normalised scale
  is (ln eps - mean) / (2 std), -1.28 with AudioSet's mean and std; the extractor's own padding (0 of the log
  domain) would be 0.47, AudioSet's mean level.
- Waveform classifiers (wav2vec 2.0, HuBERT, WavLM... for sequence classification, with a raw-waveform
  ``Wav2Vec2FeatureExtractor``): explained on the STFT (``WaveformSTFT``), whose inverse with the clip's phase is
  exact; the spectrogram model is that inverse followed by the network (``WaveformNet``), so what a mask's audio
  sounds like is what the network hears. It needs the clip's phase, so the explanation runs it one clip at a
  time (``clip_phase``).
"""
from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from audio_xai.errors import UsageError, UsageFileNotFoundError, UsageValueError
from .contract import SpectrogramClassifier, TokenAttention
from .hf_features import FLOOR_DB, KaldiFbank, WaveformSTFT

log = logging.getLogger(__name__)

OPTION = "--model.init_args.pretrained"
EXTRA = "pip install 'audio-xai[hf]' (or pip install transformers)"
AST = "audio-spectrogram-transformer"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise UsageError(f"lightning_modules.huggingface.HuggingFaceClassifier needs the transformers package: "
                         f"{EXTRA}") from err
    return transformers


@contextlib.contextmanager
def _quiet(transformers):
    """transformers' progress bars and load reports off: this module says what matters in its own lines."""
    logging_ = transformers.utils.logging
    level, bars = logging_.get_verbosity(), logging_.is_progress_bar_enabled()
    logging_.set_verbosity_error()
    logging_.disable_progress_bar()
    try:
        yield
    finally:
        logging_.set_verbosity(level)
        if bars:
            logging_.enable_progress_bar()


def _first_line(err: Exception) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def _check_folder(path: Path) -> None:
    if not path.is_dir():
        raise UsageValueError(f"{OPTION} {path} is a file; give the folder that model.save_pretrained and "
                              f"feature_extractor.save_pretrained wrote")
    missing = [what for what, there in (
        ("config.json (the model's config)", (path / "config.json").is_file()),
        ("weights (model.safetensors or pytorch_model.bin)", any((path / w).is_file() for w in WEIGHTS)),
        ("preprocessor_config.json (the feature extractor)", (path / "preprocessor_config.json").is_file()))
        if not there]
    if missing:
        raise UsageFileNotFoundError(f"{OPTION} {path} has no {' and no '.join(missing)}; save the model and its "
                                     f"feature extractor there with model.save_pretrained(FOLDER) and "
                                     f"feature_extractor.save_pretrained(FOLDER)")


def _kind(transformers, config, extractor) -> str:
    """``ast`` or ``waveform``; anything else is an error naming what it is."""
    name = getattr(config, "model_type", type(config).__name__)
    if type(config) not in transformers.MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING:
        raise UsageValueError(f"{OPTION}: a {name} model is not an audio classifier (AutoModelForAudioClassification "
                              f"has no class for it); give an audio classification model, e.g. AST or wav2vec 2.0")
    if name == AST and isinstance(extractor, transformers.ASTFeatureExtractor):
        return "ast"
    if isinstance(extractor, transformers.Wav2Vec2FeatureExtractor) and extractor.feature_size == 1:
        return "waveform"
    raise UsageValueError(f"{OPTION}: a {name} classifier with a {type(extractor).__name__} is not supported: AST "
                          f"(Kaldi filter banks) and classifiers of the raw waveform (a Wav2Vec2FeatureExtractor: "
                          f"wav2vec 2.0, HuBERT, WavLM, ...) are")


def load(pretrained: Union[str, dict], num_classes: Optional[int]):
    """(model, feature extractor, kind) from a folder or Hub id, or a new model of a config (a dict with its
    ``model_type``, random weights); the head has ``num_classes`` outputs (None: the saved labels)."""
    transformers = _transformers()
    with _quiet(transformers):
        if isinstance(pretrained, dict):
            return _from_config(transformers, dict(pretrained), num_classes)
        if Path(pretrained).exists():
            _check_folder(Path(pretrained))
        try:
            config = transformers.AutoConfig.from_pretrained(pretrained)
            extractor = transformers.AutoFeatureExtractor.from_pretrained(pretrained)
        except (OSError, ValueError) as err:
            where = "the folder" if Path(pretrained).exists() else "not a folder here, and the Hugging Face Hub"
            raise UsageValueError(f"{OPTION} {pretrained}: {where} did not give a model and feature extractor "
                                  f"({_first_line(err)}); give a folder written by save_pretrained, or a Hub id "
                                  f"on a machine with a network") from err
        kind = _kind(transformers, config, extractor)
        kwargs = {"attn_implementation": "eager"}  # the attention weights: the `attention` method reads them
        saved = config.num_labels
        head = any(a.endswith("Classification") for a in getattr(config, "architectures", None) or [])
        outputs = saved if num_classes is None else num_classes
        if not head or outputs != saved:
            log.warning("%s: %s; it gets a new head of %d outputs (random weights), which fit trains", pretrained,
                        f"the saved model has {saved} labels but --model.init_args.num_classes is {num_classes}"
                        if head else "the saved model has no classification head", outputs)
            kwargs.update(num_labels=outputs, id2label={i: str(i) for i in range(outputs)},
                          label2id={str(i): i for i in range(outputs)}, ignore_mismatched_sizes=True)
        model = transformers.AutoModelForAudioClassification.from_pretrained(pretrained, **kwargs)
    return model, extractor, kind


def _from_config(transformers, settings: dict, num_classes: Optional[int]):
    model_type = settings.pop("model_type", None)
    try:
        config = transformers.AutoConfig.for_model(model_type, **settings)
    except (ValueError, TypeError, KeyError) as err:
        raise UsageValueError(f"{OPTION}: a config must name a model_type that transformers knows "
                              f"({AST}, wav2vec2, hubert, ...), got {model_type!r} ({_first_line(err)})") from err
    if num_classes is not None:
        config.num_labels = num_classes
    if model_type == AST:
        extractor = transformers.ASTFeatureExtractor(num_mel_bins=config.num_mel_bins, max_length=config.max_length)
    else:
        extractor = transformers.Wav2Vec2FeatureExtractor()
    kind = _kind(transformers, config, extractor)
    model = transformers.AutoModelForAudioClassification.from_config(config, attn_implementation="eager")
    return model, extractor, kind


def hf_sanity_layers(model: nn.Module, prefix: str = "model") -> tuple[str, ...]:
    """The randomisation test's layers of a transformers classifier, from the output down: the modules beside
    the base model (the head, a projector), then the encoder's layers from the last."""
    base = model.base_model_prefix
    heads = [n for n, m in model.named_children() if n != base and any(True for _ in m.parameters())]
    n = model.config.num_hidden_layers
    layers = next(name for name, m in getattr(model, base).named_modules() if isinstance(m, nn.ModuleList)
                  and len(m) == n and all(any("attention" in s for s, _ in item.named_modules()) for item in m))
    return (tuple(f"{prefix}.{h}" for h in reversed(heads))
            + tuple(f"{prefix}.{base}.{layers}.{i}" for i in reversed(range(n))))


class ASTNet(nn.Module):
    """dB filter banks (B, 1, frames, mels) -> logits: floored at the filter banks' floor, to the natural log,
    normalised as the feature extractor does, through AST."""

    gradcam_layer = None
    gradcam_reason = ("an attention model: its only convolution is the patch projection, before every attention "
                      "layer, so there is no last convolutional layer for Grad-CAM to weigh")

    def __init__(self, model: nn.Module, mean: float, std: float, normalise: bool = True):
        super().__init__()
        self.model, self.mean, self.std, self.normalise = model, float(mean), float(std), normalise

    @property
    def sanity_layers(self) -> tuple[str, ...]:
        return hf_sanity_layers(self.model)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The extractor's values (B, frames, mels) of dB filter banks."""
        log_mel = x.squeeze(1).clamp_min(FLOOR_DB) * (math.log(10.0) / 10.0)
        return (log_mel - self.mean) / (2.0 * self.std) if self.normalise else log_mel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=self.inputs(x)).logits

    def attentions(self, x: torch.Tensor) -> TokenAttention:
        """Every layer's attention; the class and distillation tokens in front (the head reads their mean);
        patches of ``patch_size`` every ``time_stride`` frames and ``frequency_stride`` bands, overlapping, in
        the order of the projection's (frequency, time) grid."""
        out = self.model(input_values=self.inputs(x), output_attentions=True)
        c = self.model.config
        frames, bands = x.shape[2:]
        n_f = (bands - c.patch_size) // c.frequency_stride + 1
        n_t = (frames - c.patch_size) // c.time_stride + 1
        f0 = torch.arange(n_f).repeat_interleave(n_t) * c.frequency_stride
        t0 = torch.arange(n_t).repeat(n_f) * c.time_stride
        boxes = torch.stack([t0, t0 + c.patch_size, f0, f0 + c.patch_size], 1)
        return TokenAttention(list(out.attentions), 2, boxes)


class WaveformNet(nn.Module):
    """STFT dB (B, 1, T, F) -> logits: the inverse STFT with the clip's phase (set by ``clip_phase``), normalised
    as the feature extractor does, through the waveform classifier."""

    gradcam_layer = None
    gradcam_reason = ("a waveform model: its convolutions run over the waveform, not over the spectrogram's "
                      "time-frequency grid")
    attention_reason = "it attends over frames of the waveform, not over patches of the spectrogram"

    def __init__(self, model: nn.Module, front: WaveformSTFT, normalise: bool = True):
        super().__init__()
        self.model, self.front, self.normalise = model, front, normalise
        self._phase: Optional[torch.Tensor] = None
        self._length = 0

    @contextlib.contextmanager
    def clip_phase(self, phase: torch.Tensor, length: int):
        """Within it the spectrograms given are of the one clip of ``phase`` (1, F, T) and ``length`` samples at
        the front-end's ``sample_rate`` (any number of rows: masks, perturbations of it)."""
        if len(phase) != 1:
            raise ValueError(f"clip_phase takes one clip's phase, got {len(phase)}")
        saved = self._phase, self._length
        self._phase, self._length = phase, self.front.model_length(length)
        try:
            yield self
        finally:
            self._phase, self._length = saved

    @property
    def sanity_layers(self) -> tuple[str, ...]:
        return hf_sanity_layers(self.model)

    def classify(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) waveform at the model's rate -> logits."""
        if self.normalise:  # Wav2Vec2FeatureExtractor's zero mean and unit variance per clip
            wave = (wave - wave.mean(-1, keepdim=True)) / torch.sqrt(wave.var(-1, unbiased=False, keepdim=True) + 1e-7)
        return self.model(input_values=wave).logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._phase is None:
            raise RuntimeError("WaveformNet hears a spectrogram through its clip's phase: call it inside "
                               "clip_phase(phase, length)")
        phase = self._phase.expand(len(x), *self._phase.shape[1:])
        return self.classify(self.front.inverse_at_model_rate(x, phase, self._length))


class HuggingFaceClassifier(SpectrogramClassifier):
    """A Hugging Face audio classifier (AST, or a waveform classifier such as wav2vec 2.0 or HuBERT), fine-tuned
    with ``fit`` and explained with ``test --explain`` (module docstring).

    Args:
        pretrained: a folder that ``save_pretrained`` wrote the model and its feature extractor to, or a Hub id
            (needs a network); or a config as a mapping with its ``model_type`` (``configs/quickstart-ast.yaml``):
            a new model with random weights.
        num_classes: outputs of the head; unset: the saved model's labels. Another count replaces the head (a
            warning names both counts).
        lr: Adam learning rate (1e-5: AST's recipe for fine-tuning on ESC-50).
    """

    def __init__(self, pretrained: Union[str, dict], num_classes: Optional[int] = None, lr: float = 1e-5):
        model, extractor, kind = load(pretrained, num_classes)
        num_classes = model.config.num_labels  # saved with the hyperparameters: a checkpoint rebuilds this head
        super().__init__(num_classes, lr)
        self.kind, self.model_type = kind, model.config.model_type
        normalise = bool(getattr(extractor, "do_normalize", True))
        if kind == "ast":
            self.features = KaldiFbank(extractor.sampling_rate, extractor.num_mel_bins, extractor.max_length)
            self.net = ASTNet(model, extractor.mean, extractor.std, normalise)
        else:
            self.features = WaveformSTFT(extractor.sampling_rate)
            self.net = WaveformNet(model, self.features, normalise)

    @property
    def model_label(self) -> str:
        return "ast" if self.kind == "ast" else self.model_type

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.kind == "waveform":  # what net(features(wave)) gives with the clip's own phase, without the STFT
            return self.net.classify(self.features.to_model_rate(waveform))
        return super().forward(waveform)

    def _check_data(self, stage: str) -> None:
        """The data's rate is the front-end's input rate (resampled to the model's, said once); clips must fit
        AST's frames; then the base class's checks."""
        hparams = getattr(getattr(self._trainer, "datamodule", None), "hparams", None)
        rate, duration = getattr(hparams, "sample_rate", None), getattr(hparams, "duration", None)
        if rate is not None and rate != self.features.sample_rate:
            if rate != self.features.model_rate:
                log.warning("the data is at %d Hz and the model's feature extractor at %d Hz: the model resamples "
                            "each clip, and its audio back for listening (--data.sample_rate %d resamples once, as "
                            "the clips load)", rate, self.features.model_rate, self.features.model_rate)
            self.features.set_sample_rate(rate)
        if rate is not None and duration is not None and self.kind == "ast":
            self.features.check_length(round(rate * duration), f"--data.duration {duration:g}")
        super()._check_data(stage)
