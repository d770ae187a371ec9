"""Every number the tool reports, named once: its label in tables and which way is better (None: neither,
a property such as the share of cells in the truth). The seven metrics come from their torchmetrics classes;
the curves' areas, localisation and the sanity check's similarities are declared here.

Example:
    >>> header("AD"), header("deletion"), header("spearman_abs")
    ('AD ↓', 'deletion AUC ↓', 'Spearman of |map| ↓')
"""
from __future__ import annotations

from dataclasses import dataclass

from .metrics import METRICS
from .records import LSD, SC, SI_SDR, SI_SDRI


@dataclass(frozen=True)
class Measure:
    label: str
    higher_is_better: bool | None

    @property
    def arrow(self) -> str:
        return {True: "↑", False: "↓", None: ""}[self.higher_is_better]


MEASURES: dict[str, Measure] = {
    **{name: Measure(cls.label or name, cls.higher_is_better) for name, cls in METRICS.items()},
    # areas under the curves (explain/curves.py): a faithful map makes deletion fall and insertion rise fast
    "deletion": Measure("deletion AUC", False),
    "insertion": Measure("insertion AUC", True),
    # localisation against a ground truth (explain/localisation.py)
    "relevance_mass_accuracy": Measure("relevance_mass_accuracy", True),
    "relevance_rank_accuracy": Measure("relevance_rank_accuracy", True),
    "pointing_game": Measure("pointing_game", True),
    "truth_area": Measure("truth_area", None),
    "precision": Measure("precision", True),
    "recall": Measure("recall", True),
    # the sanity check (explain/sanity.py): maps should change once the model's weights are random
    "spearman": Measure("Spearman", False),
    "spearman_abs": Measure("Spearman of |map|", False),
    "ssim": Measure("SSIM", False),
    # what is heard against what was scored (explain/heard.py): how far the front-end of the audio of a
    # spectrogram is from it, and, in the mixture scenario, how well the masked-in audio recovers the target
    LSD: Measure("LSD (dB)", False),
    SC: Measure("SC", False),
    SI_SDR: Measure("SI-SDR (dB)", True),
    SI_SDRI: Measure("SI-SDRi (dB)", True),
}


def header(name: str) -> str:
    """A measure's column heading: its label and the arrow of its better direction."""
    m = MEASURES[name]
    return f"{m.label} {m.arrow}".rstrip()


def better_word(name: str) -> str:
    """``lower`` or ``higher``: the better direction in words."""
    return "higher" if MEASURES[name].higher_is_better else "lower"
