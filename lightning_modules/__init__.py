"""Features -> model: the dB front-ends with their inverses, the model contract, Cnn14 and its classifier, a
spectrogram transformer. (The L-MAC interpreter of a trained classifier is trained with the explanations' masking:
explain/interpreter.py.)"""
from .classifier import AudioClassifier
from .cnn14 import Cnn14
from .contract import SpectrogramClassifier
from .features import MeldB, STFTdB, make_features
from .pretrained import load_panns_weights
from .transformer import SpectrogramTransformer

__all__ = ["AudioClassifier", "Cnn14", "MeldB", "STFTdB", "SpectrogramClassifier", "SpectrogramTransformer",
           "make_features", "load_panns_weights"]
