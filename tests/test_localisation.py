"""Localisation against a ground truth (explain/localisation.py): the metrics against Quantus, the box in
feature coordinates against bins worked out by hand, the sums across processes, and the trained
quickstart model's maps against the synthetic data's boxes through the command line."""
import csv
import math

import numpy as np
import pytest
import torch

from explain.localisation import (MAP_METRICS, MASK_METRICS, Localisation, box_bins,
                                  box_frames, mask_precision_recall, pointing_game, relevance_mass,
                                  relevance_rank)
from explain.records import LocalisationValue
from lightning_modules.features import MeldB, STFTdB


def random_boxes(n: int, t: int, f: int, g: torch.Generator) -> torch.Tensor:
    boxes = torch.zeros(n, 1, t, f, dtype=torch.bool)
    for i in range(n):
        t0, f0 = int(torch.randint(0, t - 2, (1,), generator=g)), int(torch.randint(0, f - 2, (1,), generator=g))
        t1 = t0 + 1 + int(torch.randint(1, t - t0, (1,), generator=g))
        f1 = f0 + 1 + int(torch.randint(1, f - f0, (1,), generator=g))
        boxes[i, 0, t0:t1, f0:f1] = True
    return boxes


@pytest.mark.parametrize("ours, theirs", [(relevance_mass, "RelevanceMassAccuracy"),
                                          (relevance_rank, "RelevanceRankAccuracy"),
                                          (pointing_game, "PointingGame")])
def test_localisation_metrics_match_quantus(ours, theirs):
    quantus = pytest.importorskip("quantus")
    g = torch.Generator().manual_seed(0)
    # non-negative and continuous: no ties, and Quantus's signed sums equal the positive mass
    maps = torch.rand(8, 1, 12, 10, generator=g, dtype=torch.float64)
    truth = random_boxes(8, 12, 10, g)
    maps[0, 0, 3, 4] = 5.0  # a clip whose maximum sits inside its box and one whose maximum does not
    truth[0] = False
    truth[0, 0, 2:5, 3:6] = True
    maps[1, 0, 0, 0], truth[1, 0, 0, 0] = 5.0, False
    oracle = getattr(quantus, theirs)(abs=False, normalise=False, disable_warnings=True, display_progressbar=False)(
        model=None, x_batch=maps.numpy(), y_batch=np.zeros(8, dtype=int), a_batch=maps.numpy(),
        s_batch=truth.numpy().astype(float), channel_first=True)
    np.testing.assert_allclose(ours(maps, truth).numpy(), np.asarray(oracle, dtype=float), rtol=1e-12, atol=0)
    if ours is pointing_game:
        assert ours(maps, truth)[:2].tolist() == [1.0, 0.0]


def test_relevance_mass_of_a_signed_map_is_quantus_on_its_positive_part():
    quantus = pytest.importorskip("quantus")
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    truth = random_boxes(5, 8, 8, g)
    pos = maps.clamp_min(0).numpy()
    oracle = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True, display_progressbar=False)(
        model=None, x_batch=pos, y_batch=np.zeros(5, dtype=int), a_batch=pos, s_batch=truth.numpy().astype(float),
        channel_first=True)
    np.testing.assert_allclose(relevance_mass(maps, truth).numpy(), oracle, rtol=1e-12)
    assert relevance_mass(-maps.abs(), truth).tolist() == [0.0] * 5  # no positive mass: none of it in the box


def test_mask_precision_and_recall():
    truth = torch.tensor([[[[True, False], [True, False]]]])
    soft = torch.tensor([[[[0.5, 1.0], [0.0, 0.25]]]])
    out = mask_precision_recall(soft.unsqueeze(0), truth)[0, 0]
    assert out.tolist() == pytest.approx([0.5 / 1.75, 0.5 / 2])
    # binary masks: the usual precision and recall of the selected cells
    sklearn = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(2)
    masks = (torch.rand(3, 4, 1, 6, 5, generator=g) > 0.5).float()
    truth = random_boxes(4, 6, 5, g)
    got = mask_precision_recall(masks, truth)
    for k in range(3):
        for b in range(4):
            y, m = truth[b].flatten().numpy(), masks[k, b].flatten().numpy().astype(bool)
            assert got[k, b].tolist() == pytest.approx([sklearn.precision_score(y, m), sklearn.recall_score(y, m)])
    assert mask_precision_recall(torch.zeros(1, 1, 1, 2, 2), truth[:1, :, :2, :2])[0, 0].tolist() == [0.0, 0.0]


def test_states_summed_across_processes_give_the_one_process_means():
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(10, 1, 8, 6, generator=g)
    masks = torch.rand(2, 10, 1, 8, 6, generator=g)
    truth = random_boxes(10, 8, 6, g)
    keep = torch.tensor([True, False] * 5)
    ids = [f"{i}.wav" for i in range(10)]
    whole = Localisation(("a", "b"))
    whole.update(maps, masks, truth, keep, ids)
    parts = [Localisation(("a", "b")) for _ in range(2)]
    parts[0].update(maps[:3], masks[:, :3], truth[:3], keep[:3], ids[:3])
    parts[1].update(maps[3:], masks[:, 3:], truth[3:], keep[3:], ids[3:])
    parts[0].merge_state(parts[1])  # what the sum reduction of a distributed run does
    merged, out = parts[0].compute(), whole.compute()

    def flat(o):
        return [o["n"], *o["map"].values(), *(v for m in o["mask"].values() for v in m.values())]
    assert flat(merged) == pytest.approx(flat(out), rel=1e-12)  # float64 sums in another order
    assert out["n"] == 5
    kept = keep.nonzero().flatten()
    assert out["map"]["relevance_mass_accuracy"] == pytest.approx(relevance_mass(maps[kept], truth[kept]).mean().item())
    assert out["map"]["truth_area"] == pytest.approx(truth[kept].double().mean().item())
    assert out["mask"]["b"]["recall"] == pytest.approx(mask_precision_recall(masks[1:, kept], truth[kept])[0, :, 1].mean().item())


def test_stft_box_holds_the_bins_whose_cells_overlap_the_band():
    feats = STFTdB(32000)  # 62.5 Hz bins: bin k at 62.5 k Hz, its cell 31.25 Hz either side
    assert box_bins(feats, 1010, 1990).nonzero().flatten().tolist() == list(range(16, 33))
    assert box_bins(feats, 1040, 1960).nonzero().flatten().tolist() == list(range(17, 32))
    assert box_bins(feats, 1000, 1000).nonzero().flatten().tolist() == [16]  # a pure tone: its own bin
    # frames centred every 8 ms with half a 16 ms window either side: 0.1-0.195 s holds centres 0.096-0.2 s
    assert box_frames(feats, 0.1, 0.195, 100).nonzero().flatten().tolist() == list(range(12, 26))


def test_mel_box_holds_the_bands_whose_triangles_reach_into_the_band():
    feats = MeldB(32000, filterbank="htk")

    def mel(f):
        return 2595 * np.log10(1 + np.asarray(f) / 700)

    edges = 700 * (10 ** (np.linspace(mel(50), mel(14000), 66) / 2595) - 1)  # HTK band m spans edges m..m+2
    stft = np.arange(513) * 31.25
    for f0, f1 in [(300, 900), (1000, 1000), (2000, 6500), (8000, 15000)]:
        inside = stft[(stft >= f0 - 15.625) & (stft <= f1 + 15.625)]
        expected = [m for m in range(64) if ((inside > edges[m]) & (inside < edges[m + 2])).any()]
        assert box_bins(feats, f0, f1).nonzero().flatten().tolist() == expected, (f0, f1)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_explained_quickstart_maps_fall_in_the_synthetic_boxes(explained_run):
    """``test --explain`` on the synthetic data writes localisation.csv, and every study method's positive
    attribution lies in the planted box more than a random map's would (the box's share of the cells)."""
    out, stdout = explained_run
    with open(out / "localisation.csv") as f:
        assert f.readline().strip() == ",".join(LocalisationValue.columns())
    rows = read_rows(out / "localisation.csv")
    clips = [r for r in read_rows(out / "per_clip.csv") if r["scored"] == "spectrogram"]
    methods = sorted({r["method"] for r in clips})
    correct = sum(int(r["correct"]) for r in clips if r["method"] == methods[0] and r["mask"] == "minmax")
    assert f"localisation.csv ({correct} of" in stdout
    assert {int(r["n"]) for r in rows} == {correct} and correct >= 5
    masks = sorted({r["mask"] for r in clips})
    assert len(rows) == len(methods) * (len(MAP_METRICS) + len(masks) * len(MASK_METRICS))
    value = {(r["method"], r["mask"], r["metric"]): float(r["value"]) for r in rows}
    assert all(0 <= v <= 1 for v in value.values())
    for method in ("saliency", "gradcam", "lime", "shap"):
        area = value[(method, "", "truth_area")]
        assert value[(method, "", "relevance_mass_accuracy")] > area, method
    assert all(not math.isnan(v) for v in value.values())


def test_the_curves_ranks_given_to_localisation_give_the_same_values_as_its_own():
    from explain.curves import cell_ranks
    from explain.masks import MASK_NAMES, make_masks
    torch.manual_seed(1)
    maps = torch.randn(5, 1, 6, 4).round(decimals=1)  # ties, which the seeded order breaks
    truth = torch.rand(5, 1, 6, 4) > 0.7
    keep = torch.tensor([True, False, True, True, True])
    ids = [f"c{i}.wav" for i in range(5)]
    masks = make_masks(maps)
    own, given = Localisation(MASK_NAMES, seed=3), Localisation(MASK_NAMES, seed=3)
    own.update(maps, masks, truth, keep, ids)
    given.update(maps, masks, truth, keep, ids, ranks=cell_ranks(maps, ids, 3))
    assert own.compute() == given.compute()
    # the ranks of the reversed maps: the rank accuracy moves (the ranks given are really used)
    other = Localisation(MASK_NAMES, seed=3)
    other.update(maps, masks, truth, keep, ids, ranks=cell_ranks(-maps, ids, 3))
    assert other.compute()["map"]["relevance_rank_accuracy"] != own.compute()["map"]["relevance_rank_accuracy"]
