"""What a listener hears (issue 20): runs that scored the metrics on the masked spectrogram and on what is heard of
it, compared; how far the heard spectrogram is from the scored one (``distortion.csv``); and, in the mixture
scenario, how well the masked-in audio recovers the target (``separation.csv``).

The comparison is ``compare.compare`` along ``scored`` (pairs of run keys equal in every other setting), shown for
the metrics that scoring what is heard changes (``HEARD_METRICS``: a mask's own properties, SPS, COMP and COMPn,
are the same in both). SI-SDR and SI-SDRi are means over clips with percentile bootstrap intervals; a method beats
the controls at a mask where its SI-SDRi minus the best control's (the control of highest mean SI-SDRi at that
mask) has a paired interval above 0.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from explain.base import is_control
from explain.masks import MASK_NAMES
from explain.metrics import CONCISENESS_METRICS, METRIC_NAMES
from explain.records import SEPARATION_MEASURES, SI_SDRI, DistortionValue, RunKey, SeparationValue
from explain.summary import N_BOOT, SEED, intervals, paired_differences

from .checks import SPECTROGRAM, read_keyed
from .compare import Comparison, compare
from .tables import Row, method_rank

HEARD_METRICS = tuple(m for m in METRIC_NAMES if m not in CONCISENESS_METRICS)


def heard_comparison(rows: list[Row], n_boot: int = N_BOOT, seed: int = SEED) -> Comparison | None:
    """The comparison along ``scored``, or None where no heard run key has its spectrogram counterpart."""
    spectrogram = {r.run for r in rows if r.scored == SPECTROGRAM}
    if not any(dataclasses.replace(r.run, scored=SPECTROGRAM) in spectrogram for r in rows if r.scored != SPECTROGRAM):
        return None
    return compare(rows, "scored", n_boot, seed)


def _place(method: str, mask: str) -> tuple:
    """Methods as registered, then the references (ideal binary mask, mixture), masks in the paper's order."""
    return (method in SeparationValue.REFERENCES, method_rank(method), method,
            MASK_NAMES.index(mask) if mask in MASK_NAMES else -1)


def read_distortion(rows: list[Row]) -> dict[RunKey, list[DistortionValue]]:
    """Per run key, the rows of the ``distortion.csv`` files beside the results given (a row in several runs: the
    newest), the unmasked clip first."""
    found: dict[tuple, DistortionValue] = {}
    for _, records in read_keyed(rows, "distortion.csv", DistortionValue):
        for rec in records:
            found.setdefault((rec.key, rec.method, rec.mask, rec.part), rec)
    out: dict[RunKey, list[DistortionValue]] = {}
    for rec in sorted(found.values(), key=lambda r: (r.key, r.part != "clip", *_place(r.method, r.mask))):
        out.setdefault(rec.key, []).append(rec)
    return out


@dataclass
class Separation:
    """One (method, mask)'s SI-SDR and SI-SDRi over its clips; ``margin``: its SI-SDRi minus that of ``control``
    (the best control at its mask) over the clips both separated, with the margin's interval (methods only)."""
    key: RunKey
    method: str
    mask: str
    n: int
    means: dict[str, float]
    ci: dict[str, tuple[float, float]]
    control: str = ""
    margin: float | None = None
    margin_ci: tuple[float, float] | None = None

    @property
    def beats(self) -> bool | None:
        return None if self.margin_ci is None else self.margin_ci[0] > 0


def read_separation(rows: list[Row], n_boot: int = N_BOOT, seed: int = SEED) -> dict[RunKey, list[Separation]]:
    """Per run key, each (method, mask) of the ``separation.csv`` files beside the results given (a run key in
    several runs: the newest's)."""
    clips: dict[RunKey, dict[tuple, tuple[list[str], dict[str, list[float]]]]] = {}
    for _, records in read_keyed(rows, "separation.csv", SeparationValue):
        mine: dict[RunKey, dict] = {}
        for rec in records:
            names, values = mine.setdefault(rec.key, {}).setdefault(
                (rec.method, rec.mask), ([], {m: [] for m in SEPARATION_MEASURES}))
            names.append(rec.clip)
            for m in SEPARATION_MEASURES:
                values[m].append(getattr(rec, m))
        for key, found in mine.items():
            clips.setdefault(key, found)
    out = {}
    for key, found in sorted(clips.items()):
        arrays = {k: (names, {m: np.asarray(v) for m, v in values.items()}) for k, (names, values) in found.items()}
        out[key] = _separation(key, arrays, n_boot, seed)
    return out


def _separation(key: RunKey, arrays: dict, n_boot: int, seed: int) -> list[Separation]:
    table = []
    for (method, mask), (names, values) in sorted(arrays.items(), key=lambda item: _place(*item[0])):
        table.append(Separation(key, method, mask, len(names), {m: float(v.mean()) for m, v in values.items()},
                                intervals(values, n_boot, seed) if n_boot > 0 else {}))
    for s in table:
        if is_control(s.method) or s.method in SeparationValue.REFERENCES:
            continue
        controls = [c for c in table if is_control(c.method) and c.mask == s.mask]
        if not controls:
            continue
        best = max(controls, key=lambda c: c.means[SI_SDRI])
        only = {m: v for m, v in arrays[(best.method, best.mask)][1].items() if m == SI_SDRI}
        paired, _, _ = paired_differences((arrays[(best.method, best.mask)][0], only),
                                          (arrays[(s.method, s.mask)][0], arrays[(s.method, s.mask)][1]), n_boot, seed)
        s.control, (s.margin, s.margin_ci) = best.method, paired[SI_SDRI]
    return table
