"""Waveforms in: ESC-50 (or its synthetic stand-in), any labelled audio folder, noise scenarios, downloads."""
from .esc50 import ESC50DataModule
from .folder import AudioFolderDataModule
from .noise import SCENARIOS, TrainNoise
from .synthetic import read_signatures, write_synthetic_esc50

__all__ = ["AudioFolderDataModule", "ESC50DataModule", "SCENARIOS", "TrainNoise", "read_signatures",
           "write_synthetic_esc50"]
