"""DeepLIFT (captum's ``DeepLift``, rescale rule): the target logit's difference from the baseline's,
split over the input cells; the map sums to f_c(x) - f_c(b), as the model exposes every nonlinearity as its
own ``nn.ReLU`` (see ``lightning_modules/cnn14.py``; a model that does not is refused before the first map).
Against the background clips it is Deep SHAP (the ``shap`` method, which reuses the background's
activations). Cost: one forward and backward pass of the clip with its baseline (2 rows) per clip and
baseline."""
from __future__ import annotations

import warnings

from .base import register
from .captum_adapter import CaptumMethod, baseline_options

# captum says so at every call; the hooks are what DeepLIFT is
warnings.filterwarnings("ignore", message="Setting forward, backward hooks and attributes on non-linear")


@register("deeplift")
class DeepLift(CaptumMethod):
    label = "DeepLIFT"
    captum_class = "DeepLift"
    baselines_as = "each"
    rows_per_clip = 2  # captum runs the clip and its baseline in one batch
    declared_options = baseline_options("floor (-100 dB: the clip against silence), background (the mean of the "
                                        "maps against each background clip) or background_mean (against the "
                                        "background's mean spectrogram)")

    def check_model(self, x):
        from lightning_modules.contract import check_rescale_rule
        check_rescale_rule(self.model, x, "deeplift")

    def call(self, x, target, baseline):
        return self.captum().attribute(x, baselines=baseline, target=target)
