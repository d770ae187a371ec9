"""The writers of an explanation run: from its records (``explain.records.RunRecords``) and the facts of the run
(``RunFacts``), its files and console lines (``write_files``) and what its loggers get (``log_run``). A new
output is a change here and in ``explain.records``; the callback only gathers."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lightning.pytorch.loggers import WandbLogger

from audio_xai.files import write_json
from explain.cache import clips_hash
from explain.records import (DISTORTION_MEASURES, EXAMPLES, SEPARATION_MEASURES, ClipValues, CurvePoint,
                             DistortionValue, LocalisationValue, Result, RunRecords, SanityValue, SeparationValue,
                             write_records)
from explain.sanity import still_similar

from .wandb_log import log_explanation


@dataclass
class RunFacts:
    """What run.json says of an explanation run besides its records: the inputs scored, the data's class names,
    the methods' options, the precision policy's batch sizes and memory, the device, the checkpoint and its
    weights' hash, the clips explained (every rank's, in dataset order), the processes, the model's accuracy on
    those clips, per method the attributions computed and taken from the cache, and the cache's folder."""
    scored: list[str]
    classes: list[str]
    options: dict
    conciseness_on: str
    batch_sizes: dict
    memory_gb: float
    device: str
    ckpt_path: str | None
    weights_hash: str
    clip_names: list[str]
    world_size: int
    accuracy: dict
    attributions: dict
    cache: str | None


def separation_means(rows: Sequence[SeparationValue]) -> dict[tuple[str, str], dict[str, float]]:
    """(method, mask) -> measure (SI-SDR, SI-SDRi) -> its mean over the clips of separation.csv's rows."""
    sums: dict[tuple[str, str], list] = {}
    for r in rows:
        acc = sums.setdefault((r.method, r.mask), [{m: 0.0 for m in SEPARATION_MEASURES}, 0])
        for m in SEPARATION_MEASURES:
            acc[0][m] += getattr(r, m)
        acc[1] += 1
    return {k: {m: v / n for m, v in total.items()} for k, (total, n) in sums.items()}


def write_files(out: Path, records: RunRecords, facts: RunFacts) -> None:
    """Rank 0: the run's files (the records' tables and run.json) and what the console says of them."""
    names, r = facts.clip_names, records
    write_records(out / "per_clip.csv", r.clips, ClipValues)
    if r.distortion:
        write_records(out / "distortion.csv", r.distortion, DistortionValue)
        floor = r.distortion[0]
        print(f"\nwhat is heard: {out / 'distortion.csv'} (the unmasked clips' round trip through the "
              f"inverse: {floor.lsd_db:.2f} dB log-spectral distance, spectral convergence "
              f"{floor.spectral_convergence:.3f})")
    if r.separation:
        write_records(out / "separation.csv", r.separation, SeparationValue)
        print(f"\nseparation against the mix's target clip (SI-SDR, SI-SDRi): {out / 'separation.csv'}")
    n_localised = r.localisation[0].n if r.localisation else None
    if r.localisation:
        write_records(out / "localisation.csv", r.localisation, LocalisationValue)
        print(f"\nlocalisation against the ground truth: {out / 'localisation.csv'} ({n_localised} of "
              f"{len(names)} clips: those the model assigns their true class, with a non-empty ground truth)")
    sanity = r.sanity
    if sanity:
        write_records(out / "sanity.csv", sanity, SanityValue, key=False)  # the run's key is in results.csv
        flagged = still_similar(sanity, r.sanity_layers)
        print(f"\nsanity check: {out / 'sanity.csv'}" + (
            f"; maps that stay similar when every layer is random (they do not follow the model): "
            f"{', '.join(flagged)}" if flagged else "; every method's maps change with the model"))
    if r.curve_areas:
        write_records(out / "curves.csv", r.curves, CurvePoint)
    write_records(out / "results.csv", r.results, Result)
    ckpt = facts.ckpt_path
    write_json(out / "run.json", {
        **dataclasses.asdict(r.key), "scored": facts.scored,
        "curve_fractions": r.fractions if r.curve_areas else None,
        "sanity": {"clips": sanity[0].n, "layers": r.sanity_layers,
                   "still_similar": still_similar(sanity, r.sanity_layers)} if sanity else None,
        "curve_areas": r.curve_areas,
        "localisation_clips": n_localised,
        "methods": r.methods, "masks": r.masks, "classes": facts.classes or None,
        "options": facts.options, "conciseness_on": facts.conciseness_on,
        "precision": r.precision, "tf32": r.tf32, "batch_sizes": facts.batch_sizes,
        "memory_gb": facts.memory_gb,
        "device": facts.device,
        # what identifies the model and the data: the report keeps runs of different ones apart. The path
        # given may be a link the next fit re-points (best.ckpt), so the file it resolved to is kept too
        "ckpt_path": ckpt, "checkpoint": str(Path(ckpt).resolve()) if ckpt else None,
        "weights_hash": facts.weights_hash, "clips_hash": clips_hash(names),
        "clips": len(names), "world_size": facts.world_size, "accuracy": facts.accuracy,
        "attributions": facts.attributions, "cache": facts.cache,
    })
    attributions = ", ".join(f"{m} {c['computed']} computed, {c['cached']} from cache"
                             for m, c in facts.attributions.items())
    acc = facts.accuracy
    print(f"\nexplanation results: {out / 'results.csv'} (per clip: {out / 'per_clip.csv'}; "
          f"audio and figures: {out / EXAMPLES}); attributions: {attributions}; the model's accuracy on "
          f"the clips explained: {acc['correct'] / max(acc['clips'], 1):.3f} ({acc['correct']} of {acc['clips']}, "
          f"chance 1 in {acc['classes']})")


def log_run(loggers, records: RunRecords) -> None:
    """Rank 0 only, to every logger: the run's means as scalars, and to W&B its tables and child runs. Nothing
    here may sync metric states (the other ranks have left the loop)."""
    r, scenario = records, records.key.scenario
    # what is heard under its own prefix: the spectrogram's names stay as they were
    scalars = {f"explain/{v.key.scenario}/{'heard/' if v.key.scored == 'heard' else ''}{v.method}/{v.mask}/{m}": x
               for v in r.results for m, x in v.values.items()}
    heard = f"explain/{scenario}/heard"
    scalars.update({f"{heard}/{v.method}/{v.mask}/{v.part}_{m}" if v.method else f"{heard}/clip/{m}": getattr(v, m)
                    for v in r.distortion for m in DISTORTION_MEASURES})
    scalars.update({f"{heard}/{method}/{mask or 'none'}/{m}": x
                    for (method, mask), means in separation_means(r.separation).items() for m, x in means.items()})
    scalars.update({f"explain/{v.key.scenario}/{v.method}/localisation/{v.mask + '/' if v.mask else ''}{v.metric}":
                    v.value for v in r.localisation})
    scalars.update({f"explain/{scenario}/{name}/{key}": value
                    for name, areas in r.curve_areas.items() for key, value in areas.items()})
    for logger in loggers:
        logger.log_metrics(scalars)
        if isinstance(logger, WandbLogger):
            log_explanation(logger, records)
