"""The batch every data module's loaders yield: a dict of the clips' fields, batch first."""
from __future__ import annotations

from torch.utils.data import default_collate

from audio_xai.errors import UsageError

FIELDS = {  # what a model's training, validation and test steps may read; scenarios and data add others
    "waveform": "(B, N) float waveforms at the data's sample rate",
    "target": "(B,) class numbers",
    "filename": "the clips' names",
}


class BatchUseError(UsageError, TypeError):
    """A batch used as a tuple: it is a dict, read by name."""


class Batch(dict):
    """A dict of the clips' fields (``FIELDS``, and per scenario ``index``, ``scenario``, ``box``,
    ``target_part`` ...). Read by name, ``batch["waveform"]`` and ``batch["target"]``: a position
    (``batch[0]``, ``x, y = batch``) is a one-line error that names the keys, not a bare ``KeyError: 0``."""

    def _positional(self) -> BatchUseError:
        return BatchUseError(f"the batch is a dict, not a tuple: read it by name, batch[\"waveform\"] "
                             f"({FIELDS['waveform']}) and batch[\"target\"] ({FIELDS['target']}); its keys: "
                             f"{', '.join(self.keys())} (lightning_modules/contract.py)")

    def __getitem__(self, key):
        if isinstance(key, (int, slice)) and not isinstance(key, bool):
            raise self._positional()
        return super().__getitem__(key)

    def __iter__(self):  # unpacking, `x, y = batch`; the keys are batch.keys()
        raise self._positional()


def collate(items: list[dict]) -> Batch:
    """torch's default collation of the clips' dicts, as a ``Batch``."""
    return Batch(default_collate(items))
