"""The classifier: waveform -> dB spectrogram -> Cnn14 -> class logits."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from audio_xai.errors import UsageValueError
from .cnn14 import SPEC_AUGMENTS, Cnn14
from .contract import SpectrogramClassifier
from .features import make_features
from .pretrained import fetch_panns_checkpoint, load_panns_weights

log = logging.getLogger(__name__)
# What checkpoints written before an option existed were trained with.
OLD_CHECKPOINT_CHOICES = {"filterbank": "slaney", "spec_augment": "after_bn0"}


class AudioClassifier(SpectrogramClassifier):
    """Fine-tunes Cnn14 on spectrograms.

    Args:
        features: ``mel`` (64-band log-mel) or ``stft`` (257-bin STFT dB).
        width: Cnn14 base width; 64 is PANNs, tests use 8 or 16.
        num_classes: size of the new head (50 for ESC-50).
        lr: Adam learning rate.
        pretrained: path of the PANNs ``Cnn14_mAP=0.431.pth`` checkpoint, or None to train from scratch.
        download_pretrained: fetch that checkpoint to ``pretrained`` when it is missing.
        filterbank: mel bands of the ``mel`` front-end: ``htk`` (torchaudio's ``MelScale`` default, the study's)
            or ``slaney`` (PANNs' own, what its pretrained weights saw).
        spec_augment: training-time masking: ``study`` (torchaudio's masks on the dB input before bn0),
            ``after_bn0`` (one stripe per example after bn0) or ``none``.
    """

    def __init__(self, features: str = "mel", width: int = 64, num_classes: int = 50, lr: float = 1e-4,
                 sample_rate: int = 32000, pretrained: Optional[str] = None, download_pretrained: bool = False,
                 filterbank: str = "htk", spec_augment: str = "study"):
        super().__init__(num_classes, lr)
        self.features = make_features(features, sample_rate, filterbank)
        self.net = Cnn14(self.features.num_bins, num_classes, width, spec_augment)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # Only a fresh fine-tuning run starts from PANNs; a restored checkpoint has its own weights.
        if stage == "fit" and self.hparams.pretrained and not getattr(self, "_restored", False):
            path = Path(self.hparams.pretrained)
            if not path.is_file() and self.hparams.download_pretrained:
                fetch_panns_checkpoint(path)
            load_panns_weights(self.net, path)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._restored = True
        saved = checkpoint.get("hyper_parameters", {})
        if saved:
            self._adopt_old_choices(saved)
        for key in ("features", "width", "num_classes", "sample_rate", "filterbank"):
            if key == "filterbank" and self.hparams.features != "mel":
                continue
            if key in saved and saved[key] != self.hparams[key]:
                raise UsageValueError(f"the checkpoint was trained with {key}={saved[key]!r} but this run has "
                                      f"--model.{key} {self.hparams[key]!r}; use the checkpoint's config (or pass "
                                      f"--model.{key} {saved[key]})")

    def _adopt_old_choices(self, saved: dict) -> None:
        """A checkpoint from before an option existed was trained with the old choice: run it that way (the
        CLI builds the model from the checkpoint's hyperparameters, which lack the option, so from its default)."""
        for key, old in OLD_CHECKPOINT_CHOICES.items():
            if key in saved or self.hparams[key] == old or (key == "filterbank" and self.hparams.features != "mel"):
                continue
            if key == "filterbank":
                fb = self.features.fb
                self.features = make_features("mel", self.hparams.sample_rate, old).to(fb.device)
                log.warning("the checkpoint predates --model.filterbank: it was trained on Slaney mel bands, "
                            "so the model uses them (--model.filterbank slaney)")
            else:
                self.net.spec_augment_at = old
                self.net.spec_augment = SPEC_AUGMENTS[old]().train(self.net.training)
                if self._trainer is not None and self._trainer.state.fn == "fit":  # no masking at test time
                    log.warning("the checkpoint predates --model.spec_augment: it was trained with masking after "
                                "bn0, so the resumed fit keeps that (--model.spec_augment after_bn0)")
            self.hparams[key] = old
