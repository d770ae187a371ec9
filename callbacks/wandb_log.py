"""What ``fit`` and ``test`` runs log to Weights & Biases, in forms that W&B's own panels compare across runs,
and when W&B runs offline.

W&B's bar, scatter and parallel-coordinates panels draw one value per *run* (its summary) and group runs by
a *config* key; the rows of a logged table are only reachable through custom charts, which do not aggregate
across runs. So an explanation run (job type ``explain``) also logs one small child run per (method, mask)
(``explain-mask``: the metrics, their intervals, the study's score and the margins over each control as
summary keys) and one per method (``explain-method``: its best mask, curve areas, localisation, and as history
the deletion/insertion curves and the sanity cascade, with the example audio and figures). The score, the best
mask, the intervals and the margins are the report's own (``explain.summary``, with its default bootstrap): the
report of this run folder alone gives the same numbers under the same names.

Every child run carries the run key (``RUN_KEYS``) and its method (and mask)
as flat config keys, and composite keys to group by (``run_key``, ``run_method``, ``run_method_mask``,
``by_<field>``), so that one panel groups repeated runs (mean and standard error) without any hand work.
``report/dashboard.py`` builds its panels from the names defined here.
"""
from __future__ import annotations

import importlib
import math
import netrc
import os
import socket
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

from explain.base import is_control
from explain.curves import CURVES
from explain.records import (KEY_FIELDS, MASK_PARTS, SETTINGS, CurvePoint, DistortionValue, LocalisationValue, Result,
                             RunRecords, SanityValue, SeparationValue, example_figure, example_original, example_sound)
from explain.sanity import SIMILARITIES
from explain.summary import best_mask, clip_arrays, intervals, margins, scores

# What identifies an explanation run (explain.records.RunKey's fields), logged as flat config keys; a new
# setting of the run key reaches the runs and the dashboard from there
RUN_KEYS = KEY_FIELDS
# the run-key fields a study compares side by side for the same model, scenario, method and mask
COMPARED = SETTINGS

EXPLAIN, MASK_RUN, METHOD_RUN, REPORT = "explain", "explain-mask", "explain-method", "report"
# composite config keys of the child runs: a W&B panel groups by one key
RUN_KEY, RUN_METHOD, RUN_METHOD_MASK = "run_key", "run_method", "run_method_mask"
# history keys of a method run: x axes of its curves and of its sanity cascade, and its media
FRACTION, LAYERS_RANDOMISED = "fraction", "layers_randomised"
FIGURES, AUDIO = "examples/figures", "examples/audio"
CURVE_AREAS = tuple(f"{c}_auc" for c in CURVES)


def compared_key(field: str) -> str:
    """Config key that groups rows by everything but ``field``, with ``field``'s value last, so that the bars of
    one (model, scenario, method, mask) under each value of ``field`` sit side by side."""
    return f"by_{field}"


# config key of a method run: the study's pick among its masks (``explain.summary.best_mask``); a control has none
BEST_MASK = "best_mask"
# summary key of a mask run: its study score (``explain.summary.scores``, over this run key's rows)
SCORE = "score"
# suffixes of a value's 95 % bootstrap interval: its low and high ends
LOW, HIGH = "_low", "_high"


def best_key(metric: str) -> str:
    """Summary key of a method run: its best mask's value on ``metric`` (``best_score``: the mask's score)."""
    return f"best_{metric}"


def margin_key(metric: str, control: str) -> str:
    """Summary key of a mask run: its margin over the control's same mask, paired over the clips both explained
    (``margins.csv``'s margin; ``_low`` and ``_high``: its interval)."""
    return f"{metric}_vs_{control}"


def job_type(subcommand: str, explain: str | None) -> str:
    return EXPLAIN if subcommand == "test" and explain else subcommand


# -- offline or online ----------------------------------------------------------------------------------------
def _has_login() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str = "api.wandb.ai", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def choose_wandb_mode() -> str:
    """Respect WANDB_MODE when set; otherwise go offline without a login or without network, so nothing waits
    on a prompt."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if _has_login() and _reachable():
        return "online"
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    return "offline"


def print_sync_hint(loggers) -> None:
    """After an offline run, say where it is and how to upload it with its child runs (on global rank 0 only)."""
    from lightning.pytorch.utilities import rank_zero_only
    if os.environ.get("WANDB_MODE") != "offline" or rank_zero_only.rank != 0:
        return  # the other ranks hold a stand-in for the W&B run (its .dir is a method)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run_dir = Path(os.path.dirname(logger.experiment.dir))
            children = sorted(run_dir.parent.glob(f"offline-run-*-{logger.experiment.id}-*"))
            also = (f" {run_dir.parent}/offline-run-*-{logger.experiment.id}-*" if children else "")
            print(f"W&B ran offline (no login or no network); the run is in {run_dir}"
                  + (f", its {len(children)} per-method and per-mask runs beside it" if children else "")
                  + f". To upload it: `wandb login`, then `wandb sync {run_dir}{also}`.")


# -- what every run carries -------------------------------------------------------------------------------
def _wandb_loggers(logger_config) -> list:
    """The W&B loggers' parsed configs among ``trainer.logger`` (one, a list, or a bool)."""
    found = []
    for item in logger_config if isinstance(logger_config, list) else [logger_config]:
        path = getattr(item, "class_path", None)
        if path:
            module, _, name = path.rpartition(".")
            cls = getattr(importlib.import_module(module), name, None)
            if isinstance(cls, type) and issubclass(cls, WandbLogger):
                found.append(item)
    return found


def configure_runs(config, subcommand: str, root: str | Path) -> None:
    """Before the loggers are built: every W&B run of a command gets its job type (the command decides it, over
    what a reused config says), tags and the flat config keys known before the run: ``model`` (its feature
    type; an explanation run relabels it with ``--explainer.model_name``) and ``seed``. The group is the
    config's (``--trainer.logger.init_args.group``). Its files go to ``<root>/wandb`` (``root``: the
    ``trainer.default_root_dir`` that holds the command's run folders) unless the config names a folder."""
    kind = job_type(subcommand, config.get("explain"))
    model_config = config.get("model") or {}
    # a model given by class_path holds its arguments under init_args
    model = model_config.get("features") or (model_config.get("init_args") or {}).get("features")
    for logger in _wandb_loggers(config.trainer.logger):
        args = logger.init_args
        if args.get("save_dir") in (None, "", ".") and not args.get("dir"):  # "." is WandbLogger's default
            args.save_dir = str(root)
        args.job_type = kind
        args.config = {**(args.get("config") or {}), "model": model, "seed": config.get("seed_everything")}
        args.tags = list(dict.fromkeys([*(args.get("tags") or []), kind, *([model] if model else [])]))


def quiet(loggers) -> None:
    """Lightning passes W&B an ``anonymous`` setting of None, which W&B warns has no effect: leave it unset."""
    for logger in loggers:
        settings = getattr(logger, "_wandb_init", None)
        if isinstance(logger, WandbLogger) and isinstance(settings, dict) and settings.get("anonymous") is None:
            settings.pop("anonymous", None)


# -- what an explanation run adds --------------------------------------------------------------------------
def _joined(*parts) -> str:
    return "/".join(str(p) for p in parts)


def _finite(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


class _Children:
    """Child runs of an explanation run: same project, directory, mode, group and tags, ids derived from
    its id (so ``wandb sync`` finds them by one pattern)."""

    def __init__(self, parent, save_dir: str | None, keys: dict, tag: tuple = ()):
        # ``tag``: what sets these children's ids apart from other keys' children of the same parent
        self.parent, self.save_dir, self.keys, self.tag, self.count = parent, save_dir, keys, tag, 0

    def log(self, kind: str, parts: tuple, config: dict, summary: dict, history=()) -> None:
        """One child run for ``parts`` (method, or method and mask): its config besides the run key, the rows
        of its history, then its summary."""
        import wandb
        parent = self.parent
        self.count += 1
        # its own run while the parent stays open (wandb.init would otherwise return the open one)
        run = wandb.init(project=parent.project, entity=parent.entity or None, group=parent.group or None,
                         job_type=kind, name=_joined(*self.keys.values(), *parts), id="-".join((parent.id, *self.tag, *parts)),
                         tags=list(parent.tags or ()), config={**self.keys, **config, "parent": parent.id},
                         dir=self.save_dir, reinit="create_new", mode="offline" if parent.offline else "online",
                         settings=wandb.Settings(silent=True))
        for row in history:
            run.log(row)
        run.summary.update({k: _finite(v) for k, v in summary.items()})
        run.finish()


def log_explanation(logger: WandbLogger, records: RunRecords) -> None:
    """Rank 0, at the end of an explanation run: flat config keys and tags of the run, its tables, and its child
    runs (module docstring), per run key of its results (the spectrogram's and what is heard: the curves, sanity
    check, localisation and examples belong to the first). The intervals and the paired margins come from the
    per-clip rows (``records.clips``; without them, margins are differences of the means, as the report's are
    without per_clip.csv)."""
    r, run = records, logger.experiment
    if getattr(run, "disabled", False):  # WANDB_MODE=disabled: W&B's stand-in run, no place for child runs
        return
    by_key: dict = {}
    for result in r.results:
        by_key.setdefault(result.key, []).append(result)
    first = next(iter(by_key))
    keys = {k: getattr(first, k) for k in RUN_KEYS}
    run.config.update({**keys, "methods": r.methods, "masks": r.masks, "precision": r.precision, "tf32": r.tf32},
                      allow_val_change=True)
    values_of_keys = [str(getattr(k, f)) for k in by_key for f in RUN_KEYS]
    run.tags = tuple(dict.fromkeys((*(run.tags or ()), *values_of_keys, *r.methods)))
    for name, cls, rows in (("results", Result, r.results), ("curves", CurvePoint, r.curves),
                            ("sanity", SanityValue, r.sanity or []), ("localisation", LocalisationValue, r.localisation),
                            ("distortion", DistortionValue, r.distortion), ("separation", SeparationValue, r.separation)):
        if rows:
            logger.log_table(f"explain/{name}", columns=cls.columns(), data=[row.row() for row in rows])
    count, per_clip = 0, clip_arrays(r.clips)
    for key, rows in by_key.items():
        count += _log_children(run, logger.save_dir, r, key, rows, per_clip, primary=key == first)
    print(f"W&B: {count} child runs of this run (job types {METHOD_RUN}, one per method, and {MASK_RUN}, "
          f"one per method and mask{', per input scored' if len(by_key) > 1 else ''}) for `audio-xai dashboard`")


def _log_children(run, save_dir, records: RunRecords, key, results: list, per_clip: dict, primary: bool) -> int:
    """The child runs of one run key's results (``per_clip``: ``explain.summary.clip_arrays`` of the run's
    per-clip rows); the primary key's carry the curves, the sanity check, localisation and the examples.
    Returns how many."""
    keys = {k: getattr(key, k) for k in RUN_KEYS}
    children = _Children(run, save_dir, keys, () if primary else (key.scored,))
    joined = _joined(*keys.values())
    values = {(r.method, r.mask): dict(r.values) for r in results}
    clips = {(r.method, r.mask): r.n for r in results}
    # the report scales one run key's rows together: a run folder reported alone gives these scores
    score = dict(zip(values, scores(list(values.values()), [is_control(m) for m, _ in values])))
    controls = [m for m in records.methods if is_control(m)]
    located = _localisation_by_method(records.localisation if primary else None)
    for method in records.methods:
        base = {"method": method, "control": is_control(method), RUN_KEY: joined, RUN_METHOD: _joined(joined, method)}
        for mask in records.masks:
            own = per_clip.get((key, method, mask))
            summary = {**values[(method, mask)], "n": clips[(method, mask)], SCORE: score[(method, mask)],
                       **located.get(method, {}).get(mask, {})}
            if own is not None:
                summary.update({f"{m}{end}": v for m, ci in intervals(own[1]).items()
                                for end, v in zip((LOW, HIGH), ci)})
            for c in controls:
                if c != method:
                    found = margins(values[(method, mask)], values[(c, mask)], own, per_clip.get((key, c, mask)))
                    for m, (margin, ci, _) in found.items():
                        summary[margin_key(m, c)] = margin
                        summary.update({f"{margin_key(m, c)}{end}": v for end, v in zip((LOW, HIGH), ci or ())})
            first = [keys[k] for k in RUN_KEYS if k not in COMPARED] + [method, mask]
            config = {**base, "mask": mask, RUN_METHOD_MASK: _joined(joined, method, mask),
                      **{compared_key(f): _joined(*first, *(keys[k] for k in COMPARED if k != f), keys[f])
                         for f in COMPARED}}
            children.log(MASK_RUN, (method, mask), config, summary)
        pick = None if is_control(method) else best_mask((mask, score[(method, mask)]) for mask in records.masks)
        _log_method_run(children, records, method, base, values, pick, score, located.get(method, {}).get("", {}),
                        primary)
    return children.count


def _localisation_by_method(rows: list | None) -> dict:
    """method -> mask ('' for the map's own metrics) -> metric -> value, from localisation.csv's rows."""
    out: dict = {}
    for r in rows or ():
        out.setdefault(r.method, {}).setdefault(r.mask, {})[r.metric] = r.value
    return out


def _log_method_run(children: _Children, records: RunRecords, method: str, base: dict, values: dict, pick: str | None,
                    score: dict, located: dict, primary: bool) -> None:
    """``pick``: the method's best mask (None for a control: no candidate, as in the report)."""
    summary, config = dict(located), dict(base)
    if pick is not None:
        config[BEST_MASK] = pick
        summary.update({best_key(m): v for m, v in values[(method, pick)].items()})
        summary[best_key(SCORE)] = score[(method, pick)]
    history = []
    curve = records.curve(method) if primary else {}
    if curve:
        summary.update({k: records.curve_areas[method][k] for k in CURVE_AREAS})
        history += [{FRACTION: f, **{c: curve[c][i] for c in CURVES}} for i, f in enumerate(records.fractions)]
    if primary and records.sanity:
        by_layer = {(r.layer, r.similarity): r.value for r in records.sanity if r.method == method}
        for i, layer in enumerate(records.sanity_layers, 1):  # the cascade's order: i layers random
            row = {s: by_layer[(layer, s)] for s in SIMILARITIES if (layer, s) in by_layer}
            history += [{LAYERS_RANDOMISED: i, **row}] if row else []
    found = _media(records, method) if primary else {}
    children.log(METHOD_RUN, (method,), config, summary, history + ([found] if found else []))


def _media(records: RunRecords, method: str) -> dict:
    """The method's example figures (one per clip and mask) and audio (each clip's original, then each mask's
    masked-in and masked-out sound)."""
    import wandb
    figures, audio = [], []
    examples = records.examples
    for clip in sorted(p for p in examples.glob("*") if (p / method).is_dir()) if examples is not None else ():
        masks = [k for k in records.masks if example_figure(clip, method, k).is_file()]
        figures += [wandb.Image(str(example_figure(clip, method, k)), caption=f"{clip.name}: {k}") for k in masks]
        wavs = [(example_original(clip), "original")] + [
            (example_sound(clip, method, k, part), f"{k} masked {part}") for k in masks for part in MASK_PARTS]
        audio += [wandb.Audio(str(w), sample_rate=records.sample_rate, caption=f"{clip.name}: {c}")
                  for w, c in wavs if w.is_file()]
    return {**({FIGURES: figures} if figures else {}), **({AUDIO: audio} if audio else {})}
