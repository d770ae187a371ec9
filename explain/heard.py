"""What a listener hears of a masked spectrogram, scored (issue 20); ``PARTS``: what ``distortion.csv`` measures."""
PARTS = ("in", "out", "clip")  # the masked-in and masked-out spectrograms, and the unmasked clip
