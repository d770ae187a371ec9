"""Controls, curves and the sanity check through the command line, on the trained quickstart model."""
from __future__ import annotations

import json

import pytest

from explain.curves import FRACTIONS
from explain.masks import MASK_NAMES
from explain.sanity import LAYERS
from tests.helpers import ROOT, read_csv, run_here


@pytest.fixture(scope="module")
def checked_run(quickstart_run):
    out = quickstart_run / "checks"
    run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"),
             "--ckpt_path", "runs/quickstart/best.ckpt", "--explain", "saliency,gradcam,controls",
             "--explainer.scored", "spectrogram",
             "--data.batch_size", "6", "--trainer.limit_test_batches", "2", "--explainer.examples", "0",
             "--explainer.sanity", "true", "--explainer.sanity_clips", "6", "--explainer.output_dir", str(out),
             "--trainer.logger", "false", cwd=quickstart_run)
    return out


def test_controls_are_scored_like_methods(checked_run):
    rows = read_csv(checked_run / "results.csv")
    assert {r["method"] for r in rows} == {"saliency", "gradcam", "random", "energy"}
    assert len(rows) == 4 * len(MASK_NAMES)
    for r in rows:
        assert r["protocol"] == "corrected" and r["fill"] == "floor" and r["scored"] == "spectrogram"
        assert 0 <= float(r["COMPn"]) <= 1


def test_curves_file_holds_both_curves_of_every_method(checked_run):
    rows = read_csv(checked_run / "curves.csv")
    methods = {"saliency", "gradcam", "random", "energy"}
    assert len(rows) == len(methods) * 2 * len(FRACTIONS)
    curve = {(r["method"], r["curve"], float(r["fraction"])): float(r["prob"]) for r in rows}
    assert all(0 <= p <= 1 for p in curve.values()) and {r["n"] for r in rows} == {"12"}
    for m in methods:
        # nothing removed is the clean input, everything removed the all-filled one, whatever the map
        assert curve[(m, "deletion", 0.0)] == pytest.approx(curve[(m, "insertion", 1.0)], abs=1e-6)
        assert curve[(m, "deletion", 1.0)] == pytest.approx(curve[(m, "insertion", 0.0)], abs=1e-6)
        assert curve[(m, "deletion", 0.0)] == pytest.approx(curve[("saliency", "deletion", 0.0)], abs=1e-6)
    areas = json.loads((checked_run / "run.json").read_text())["curve_areas"]
    assert set(areas) == methods and all(set(a) == {"deletion_auc", "insertion_auc"} for a in areas.values())


def test_sanity_check_flags_the_energy_map_and_not_saliency(checked_run):
    rows = read_csv(checked_run / "sanity.csv")
    assert {(r["method"], r["layer"]) for r in rows} == {(m, l) for m in ("saliency", "gradcam", "random", "energy")
                                                         for l in LAYERS}
    energy = [float(r["value"]) for r in rows if r["method"] == "energy"]
    assert energy == [1.0] * len(energy)
    record = json.loads((checked_run / "run.json").read_text())["sanity"]
    assert record["clips"] == 6 and "energy" in record["still_similar"] and "saliency" not in record["still_similar"]
