"""DeepLIFT (captum's ``DeepLift``, rescale rule): the target logit's difference from the baseline's,
split over the input cells; the map sums to f_c(x) - f_c(b), as the model exposes every nonlinearity as its
own ``nn.ReLU`` (see ``lightning_modules/cnn14.py``). Against the background clips it is Deep SHAP (the
``shap`` method, which reuses the background's activations). Cost: one forward and backward pass of the
clip with its baseline (2 rows) per clip and baseline."""
from __future__ import annotations

import warnings

from .base import register
from .captum_adapter import CaptumMethod

# captum says so at every call; the hooks are what DeepLIFT is
warnings.filterwarnings("ignore", message="Setting forward, backward hooks and attributes on non-linear")


@register("deeplift")
class DeepLift(CaptumMethod):
    """Options:
        baseline: floor (-100 dB: the clip against silence), background (the mean of the maps against each
                background clip) or background_mean (against the background's mean spectrogram)
        background_per_class: training clips of each class in the background (baseline background*)
        background_size: at most this many background clips in all (baseline background*)
    """

    label = "DeepLIFT"
    captum_class = "DeepLift"
    baselines_as = "each"
    rows_per_clip = 2  # captum runs the clip and its baseline in one batch

    def __init__(self, model, batch_size: int = 64, seed: int = 0, baseline: str = "floor",
                 background_per_class: int = 2, background_size: int = 100):
        super().__init__(model, batch_size, seed)
        self.init_baseline(baseline, background_per_class, background_size)

    def call(self, x, target, baseline):
        return self.captum().attribute(x, baselines=baseline, target=target)
