"""Attribution -> mask -> metrics: the explanation methods, the 14 masks and the 7 metrics."""
import warnings

# captum says so for every batch; the methods hand it inputs without gradients on purpose
warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")

import importlib
import pkgutil

# every module here registers its method (in ``base.method_order``): adding a method is adding one file
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from .base import METHODS, AttributionMethod, known_methods, make_method, parse_methods, register
from .masks import MASK_NAMES, SILENCE_DB, apply_mask, make_masks
from .metrics import METRIC_NAMES, METRICS

__all__ = ["METHODS", "AttributionMethod", "known_methods", "make_method", "parse_methods", "register",
           "MASK_NAMES", "SILENCE_DB", "apply_mask", "make_masks", "METRIC_NAMES", "METRICS"]
