"""Features -> model: the dB front-ends with their inverses, Cnn14, and the classifier."""
from .classifier import AudioClassifier
from .cnn14 import Cnn14
from .features import MeldB, STFTdB, make_features
from .pretrained import load_panns_weights

__all__ = ["AudioClassifier", "Cnn14", "MeldB", "STFTdB", "make_features", "load_panns_weights"]
