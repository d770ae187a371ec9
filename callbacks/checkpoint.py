"""Keep the best validation epoch (or the last), and point ``<runs folder>/best.ckpt`` at it for the next command."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from audio_xai.errors import UsageValueError
from audio_xai.files import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary name and renames it: a run killed while saving leaves the
    previous file intact, never half a checkpoint."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class BestCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` on best ``val/acc`` written (atomically) into the run's own folder.

    At the end of ``fit`` the link ``best.ckpt`` beside the run folders is replaced (atomically) by one
    to this run's best checkpoint, or with ``keep="last"`` to its last epoch's (what the study's trainer in fact
    saved); earlier runs' checkpoints stay where they are.
    """

    def __init__(self, monitor: str = "val/acc", mode: str = "max", filename: str = "best-{epoch:02d}",
                 save_last: bool = True, keep: Literal["best", "last"] = "best", **kwargs):
        if keep not in ("best", "last"):
            raise UsageValueError(f"--checkpoint.keep must be 'best' or 'last', got {keep!r}")
        if keep == "last" and not save_last:
            raise UsageValueError("--checkpoint.keep last needs the last checkpoint: drop --checkpoint.save_last false")
        super().__init__(monitor=monitor, mode=mode, filename=filename, save_last=save_last,
                         auto_insert_metric_name=False, **kwargs)
        self.keep = keep
        self._stage = "fit"

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._stage = stage
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        super().setup(trainer, pl_module, stage)

    def load_state_dict(self, state_dict: dict) -> None:
        # a test or validation from a checkpoint uses its weights; the fit's record of its checkpoints (in
        # another folder: Lightning warns that it moved) means nothing there
        if self._stage == "fit":
            super().load_state_dict(state_dict)

    # Lightning (2.6) rewrites last.ckpt only in an epoch whose val/acc improved; --checkpoint.keep last and a
    # resumed fit need the last epoch itself
    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_every_epoch(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_every_epoch(trainer)

    def _save_last_every_epoch(self, trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):  # skipped when just saved
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_fit_end(self, trainer, pl_module) -> None:
        path = self.best_model_path if self.keep == "best" else self.last_model_path
        if not trainer.is_global_zero or not path:
            return
        link = Path(trainer.default_root_dir).parent / "best.ckpt"
        tmp = link.with_name(f".best.ckpt.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(Path(path).resolve(), link.parent.resolve()))
        os.replace(tmp, link)
        if self.keep == "best":
            what = f"best checkpoint ({self.monitor} {float(self.best_model_score):.4f})"
        else:  # the name stays best.ckpt: it is what the next command reads
            what = "last epoch's checkpoint (--checkpoint.keep last, not the best val/acc)"
        print(f"{what}: {path}\nlinked as {link}")
