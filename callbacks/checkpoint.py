"""Keep the best validation epoch, and point ``<runs folder>/best.ckpt`` at it for the next command."""
from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from files import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary name and renames it: a run killed while saving leaves the
    previous file intact, never half a checkpoint."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class BestCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` on best ``val/acc`` written (atomically) into the run's own folder.

    At the end of ``fit`` the link ``best.ckpt`` beside the run folders is replaced (atomically) by one
    to this run's best checkpoint; earlier runs' checkpoints stay where they are.
    """

    def __init__(self, monitor: str = "val/acc", mode: str = "max", filename: str = "best-{epoch:02d}",
                 save_last: bool = True, **kwargs):
        super().__init__(monitor=monitor, mode=mode, filename=filename, save_last=save_last,
                         auto_insert_metric_name=False, **kwargs)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        super().setup(trainer, pl_module, stage)

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.best_model_path:
            return
        link = Path(trainer.default_root_dir).parent / "best.ckpt"
        tmp = link.with_name(f".best.ckpt.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(Path(self.best_model_path).resolve(), link.parent.resolve()))
        os.replace(tmp, link)
        print(f"best checkpoint (val/acc {float(self.best_model_score):.4f}): {self.best_model_path}\n"
              f"linked as {link}")
