"""The AudioSet-pretrained PANNs Cnn14 checkpoint: download it, map its keys onto our Cnn14."""
from __future__ import annotations

import logging
from pathlib import Path

from audio_xai.files import download
from audio_xai.errors import UsageFileNotFoundError, UsageValueError
from .checkpoint import read_checkpoint
from .cnn14 import Cnn14

log = logging.getLogger(__name__)

PANNS_URL = "https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth?download=1"
PANNS_SIZE = 327_428_481
PANNS_MD5 = "541141fa2ee191a88f24a3219fff024e"
# The waveform front-end and AudioSet head have no counterpart here.
DROPPED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.", "fc_audioset.")


def fetch_panns_checkpoint(path: str | Path, url: str = PANNS_URL) -> Path:
    return download(url, path, size=PANNS_SIZE, md5=PANNS_MD5,
                    manual_hint=(f"download Cnn14_mAP=0.431.pth from Zenodo record 3987831 "
                                 f"({PANNS_SIZE} bytes, md5 {PANNS_MD5}) and save it as {path}"))


def load_panns_weights(model: Cnn14, path: str | Path) -> dict[str, list[str]]:
    """Copy the checkpoint's trunk weights into ``model``; returns (and logs) what did not load.

    bn0 is kept only when the model has 64 frequency bins, as PANNs was trained on 64 mel bands.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageFileNotFoundError(f"PANNs checkpoint {path} not found; set --model.pretrained to its path, or "
                                     f"--model.download_pretrained true to fetch it")
    fix = (f"give the PANNs Cnn14_mAP=0.431.pth, or delete {path} and pass --model.download_pretrained true "
           f"to fetch it again")
    ckpt = read_checkpoint(path, "--model.pretrained", fix)
    if "model" not in ckpt:
        raise UsageValueError(f"--model.pretrained {path} is not a PANNs checkpoint (no key 'model'); {fix}")
    source = ckpt["model"]
    target = model.state_dict()
    mapped, skipped = {}, []
    for key, value in source.items():
        if key.startswith(DROPPED_PREFIXES):
            continue
        if key.startswith("bn0.") and model.num_bins != 64:
            skipped.append(key)
            continue
        if key not in target:
            skipped.append(key)
        elif target[key].shape != value.shape:
            raise UsageValueError(f"{path}: {key} has shape {tuple(value.shape)} but the model expects "
                                  f"{tuple(target[key].shape)}; the PANNs checkpoint needs --model.width 64")
        else:
            mapped[key] = value
    model.load_state_dict(mapped, strict=False)
    not_loaded = sorted(k for k in target if k not in mapped)
    report = {"not_loaded": not_loaded, "unused": skipped}
    log.info("PANNs weights from %s: %d tensors loaded; not loaded: %s; unused: %s",
             path, len(mapped), not_loaded, skipped)
    return report
