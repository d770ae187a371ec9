import re

import numpy as np
import pytest
import torch

from explain.masks import MASK_NAMES, SILENCE_DB, apply_mask, make_masks, quantile
from tests.helpers import ROOT

PROTOCOL = ROOT.parent / "shared" / "PROTOCOL.md"


def masks_of(values):
    a = torch.tensor([values], dtype=torch.float64)
    return dict(zip(MASK_NAMES, make_masks(a)[:, 0].tolist()))


def papers_mask_names() -> list[str]:
    """The names in the protocol's "Masks" section, in its order: the bullets' `quoted` names."""
    if not PROTOCOL.is_file():
        pytest.skip(f"the protocol is not at {PROTOCOL} (the shared files sit beside the project)")
    section = re.search(r"^## Masks.*\n(?:[^-#].*\n)*((?:- .*\n)+)", PROTOCOL.read_text(), re.M)
    assert section, f"no '## Masks' list in {PROTOCOL}"
    return re.findall(r"`(\w+)`", section.group(1))


def test_the_fourteen_names_are_the_papers():
    assert list(MASK_NAMES) == papers_mask_names()
    assert len(MASK_NAMES) == 14


def test_hand_computed_masks():
    # 10 values so that quantiles are easy: sorted they are -4..5
    a = [-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    m = masks_of(a)
    assert m["minmax"] == pytest.approx([(v + 4) / 9 for v in a])
    assert m["sigmoid"] == pytest.approx([1 / (1 + np.exp(-v)) for v in a])
    assert m["bin"] == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    # numpy's linear quantile of -4..5: q=0.95 -> 4.55, q=0.7 -> 2.3, q=0.5 -> 0.5
    assert m["topK_5"] == [0] * 9 + [1]
    assert m["topK_30"] == [0] * 7 + [1] * 3
    assert m["topK_50"] == [0] * 5 + [1] * 5
    assert m["minmax_pos"] == pytest.approx([0, 0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert m["sigmoid_pos"] == pytest.approx([0.5] * 5 + [1 / (1 + np.exp(-v)) for v in a[5:]])
    assert m["pos_thresh_25"] == [0] * 6 + [1] * 4
    assert m["pos_thresh_50"] == [0] * 7 + [1] * 3
    assert m["pos_thresh_75"] == [0] * 8 + [1] * 2
    # A+ = 0,0,0,0,0,0,1,2,3,4,5 sorted; its 0.95 quantile is 4.55, 0.7 is 2.3, 0.5 is 0.5
    assert m["topK_5_pos"] == [0] * 9 + [1]
    assert m["topK_30_pos"] == [0] * 7 + [1] * 3
    assert m["topK_50_pos"] == [0] * 5 + [1] * 5


def test_mostly_negative_map_keeps_all_zero_positive_part():
    a = [-5.0, -4.0, -3.0, -2.0, -1.0, -1.0, -1.0, -1.0, 0.5, 1.0]
    m = masks_of(a)
    # A+ has 8 zeros, so its 0.5 quantile is 0 and every pixel passes A+ >= 0
    assert m["topK_50_pos"] == [1] * 10
    assert m["topK_5_pos"] == [0] * 9 + [1]


def test_degenerate_maps_have_documented_masks():
    const = masks_of([2.0] * 6)
    assert const["minmax"] == [0] * 6
    assert const["minmax_pos"] == [1] * 6 and const["bin"] == [1] * 6
    neg = masks_of([-1.0, -2.0, -3.0])
    assert neg["minmax_pos"] == [0, 0, 0] and neg["pos_thresh_25"] == [0, 0, 0]
    zero = masks_of([0.0] * 4)
    assert zero["minmax"] == [0] * 4 and zero["bin"] == [0] * 4 and zero["topK_5"] == [1] * 4


def test_nan_map_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        make_masks(torch.tensor([[0.0, float("nan")]]))


def test_unknown_mask_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: minmax"):
        make_masks(torch.zeros(1, 3), ("minmax", "top7"))


def test_masks_are_per_example_over_a_batch():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 1, 20, 8, generator=g)
    batch = make_masks(a)
    for i in range(5):
        torch.testing.assert_close(batch[:, i], make_masks(a[i:i + 1])[:, 0])
    assert batch.shape == (14, 5, 1, 20, 8) and batch.min() >= 0 and batch.max() <= 1


def test_quantile_matches_numpy_on_large_rows():
    x = torch.randn(3, 200_000, dtype=torch.float64)
    for q in (0.05, 0.5, 0.7, 0.95):
        np.testing.assert_allclose(quantile(x, q)[:, 0].numpy(), np.quantile(x.numpy(), q, axis=1), rtol=0, atol=1e-12)


def test_apply_mask_uses_the_silence_floor():
    x = torch.tensor([[-20.0, -60.0, 10.0]])
    m = torch.tensor([[1.0, 0.5, 0.0]])
    x_in, x_out = apply_mask(x, m)
    assert x_in.tolist() == [[-20.0, -80.0, SILENCE_DB]]
    assert x_out.tolist() == [[SILENCE_DB, -80.0, 10.0]]


def test_masks_of_the_sorted_map_are_the_sorted_masks():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(4, 300, generator=g, dtype=torch.float64)
    a[1] = a[1].abs()
    a[2, :250] = -a[2, :250].abs()
    s = torch.sort(a, dim=1).values
    masks = make_masks(a)
    torch.testing.assert_close(make_masks(a, sorted_values=s), masks)
    torch.testing.assert_close(make_masks(s, sorted_values=s), torch.sort(masks, dim=2).values)
