"""The two protocols, and every place where the study's code departs from its own description.

``corrected`` (the default) is the protocol as the paper describes it, with the study's bugs fixed;
``study`` reproduces what the study's code computed, so that its published tables can be reproduced.
Each departure is one entry of ``DEPARTURES``: what the study's code did, what ``corrected`` does, why,
which metrics it moves, and the option that selects it (a method option, a metric option or a ``fit``
option). ``settings(protocol)`` turns the list into the method and metric options of a run; docs/protocols.md's
table is ``departures_markdown()``.

Example:
    >>> method_opts, metric_opts = settings("study")
    >>> method_opts["gradcam"], metric_opts
    ({'resize': 'transposed'}, {'constant_zero': True, 'eps': 1e-06})
"""
from __future__ import annotations

from dataclasses import dataclass

from audio_xai.errors import UsageValueError

PROTOCOLS = ("corrected", "study")


@dataclass(frozen=True)
class Departure:
    name: str
    study: str
    corrected: str
    why: str
    moves: str
    scope: str  # "method:<name>", "metrics" or "fit"
    option: str  # the option's name in that scope
    values: dict  # protocol -> the option's value


DEPARTURES = (
    Departure("Grad-CAM resize",
              "resized the (T', F') CAM to the input's (F, T) grid (`cv2.resize(cam, (T, F))`): time cells "
              "stretched over frequency and frequency cells over time",
              "resizes the CAM along its own axes (bilinear, half-pixel centres)",
              "the map must lie over the time-frequency cells that produced it",
              "every Grad-CAM metric", "method:gradcam", "resize", {"study": "transposed", "corrected": "aligned"}),
    Departure("SHAP rule",
              "`shap.DeepExplainer` on a Cnn14 of functional ReLU, pooling and max calls, which its DeepLIFT "
              "rules do not see: the mean over background clips b of grad f_c(b) * (x - b), additivity unchecked",
              "DeepLIFT's rescale rule on every ReLU (Deep SHAP), summing to f_c(x) - mean f_c(b)",
              "what the paper names Deep SHAP; its attributions add up to the model's output",
              "every SHAP metric", "method:shap", "rule", {"study": "gradient", "corrected": "deeplift"}),
    Departure("SPS and COMP of a constant mask",
              "0 for both when max - min < 1e-8 + 1e-5 max|M| (an all-ones mask is maximally concise)",
              "the formulas' own values: SPS 0, COMP ln d (a uniform mask is the least concise)",
              "a mask that keeps everything explains nothing; topK_pos masks are all ones whenever fewer than "
              "k % of the values are positive", "SPS, COMP (and the best-mask picks)", "metrics", "constant_zero",
              {"study": True, "corrected": False}),
    Departure("AD and AG denominators",
              "p_c(X) + 1e-6 and 1 - p_c(X) + 1e-6",
              "p_c(X) and 1 - p_c(X), clamped below at 1e-12 (a saturated p_c(X) = 1 gives AG = 0)",
              "the metrics as defined; the epsilon shrinks AG of confident clips",
              "AD, AG (slightly)", "metrics", "eps", {"study": 1e-6, "corrected": None}),
    Departure("Checkpoint kept by training",
              "the last epoch's weights (its trainer kept a reference to the live `state_dict()`)",
              "the best validation epoch, as the paper says",
              "the paper's description; model selection on validation data",
              "every metric (another model)", "fit", "--checkpoint.keep", {"study": "last", "corrected": "best"}),
)


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise UsageValueError(f"--explainer.protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def settings(protocol: str) -> tuple[dict[str, dict], dict]:
    """(method name -> options, metric options) that ``protocol`` sets at test time."""
    check_protocol(protocol)
    methods: dict[str, dict] = {}
    metrics: dict = {}
    for d in DEPARTURES:
        if d.scope.startswith("method:"):
            methods.setdefault(d.scope.split(":", 1)[1], {})[d.option] = d.values[protocol]
        elif d.scope == "metrics":
            metrics[d.option] = d.values[protocol]
    return methods, metrics


def departures_markdown() -> str:
    """docs/protocols.md's table of departures."""
    lines = ["| departure | the study's code | `corrected` | why | moves | option (study / corrected) |",
             "|---|---|---|---|---|---|"]
    for d in DEPARTURES:
        lines.append(f"| {d.name} | {d.study} | {d.corrected} | {d.why} | {d.moves} | {_where(d)}: "
                     f"`{d.values['study']}` / `{d.values['corrected']}` |")
    return "\n".join(lines)


def _where(d: Departure) -> str:
    if d.scope == "fit":
        return f"`fit {d.option}`"
    if d.scope == "metrics":
        return f"metric option `{d.option}`"
    return f"`{d.scope.split(':', 1)[1]}` option `{d.option}`"
