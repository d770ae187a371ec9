"""Planted ground truth: on the synthetic data, attributions of the trained quickstart model point at the
box where each clip's class signature was planted, far more than a random map would."""
import pytest
import torch
import torch.nn.functional as F

from datamodules import ESC50DataModule, read_signatures
from explain import make_method
from explain.localisation import signature_boxes
from tests.helpers import quickstart_seconds

CAM_CELL = 32  # spectrogram cells per conv_block6 cell, each way (five 2 x 2 poolings)


def clips_to_explain(model, root) -> tuple:
    """20 test clips of the quickstart data at ``root`` (two per class) that ``model`` (a LightningModule of the
    contract) predicts right, with their boxes, time spans and the SHAP background."""
    dm = ESC50DataModule(root=str(root), batch_size=80, duration=quickstart_seconds())
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    pick = torch.arange(0, len(batch["target"]), 4)  # 20 clips, two per class
    names = [batch["filename"][i] for i in pick]
    with torch.no_grad():
        x = model.features(batch["waveform"][pick])
        pred = model.spectrogram_model(x).argmax(1)
    correct = pred == batch["target"][pick]
    assert correct.float().mean() >= 0.7
    box, span = signature_boxes(model.features, names, read_signatures(root), x.shape[2])
    with torch.no_grad():
        background = model.features(dm.background(2, 100)["waveform"])
    kept = [n for n, ok in zip(names, correct) if ok]
    return x[correct], pred[correct], kept, box[correct], span[correct], background


@pytest.fixture(scope="module")
def explained_clips(quickstart_run, quickstart_model):
    return clips_to_explain(quickstart_model, quickstart_run / "data" / "quickstart")


@pytest.mark.parametrize("name", ["saliency", "gradcam", "lime", "shap"])
def test_positive_attribution_falls_in_the_signature_box(quickstart_model, explained_clips, name):
    assert_maps_find_the_signatures(quickstart_model.net, explained_clips, name)


def assert_maps_find_the_signatures(net, clips, name: str) -> None:
    """Most of method ``name``'s positive attribution of ``net`` on the ``clips`` lies in the signature's time
    span, and far more of it in the box than the box's share of the cells (what a random map puts there)."""
    x, pred, names, box, span, background = clips
    method = make_method(name, net, batch_size=64, **({"num_samples": 150} if name == "lime" else {}))
    if method.needs_background:
        method.set_background(background)
    with torch.enable_grad():
        pos = method.attribute(x, pred, ids=names)[:, 0].clamp_min(0)
    total = pos.sum((1, 2))
    keep = total > 0  # signed Grad-CAM can be negative everywhere on a clip
    assert keep.sum() >= 5
    pos, total, box, span = pos[keep], total[keep], box[keep], span[keep]
    if name == "gradcam":
        # Grad-CAM's map is bilinear between conv_block6 cells (0.32 s by 32 bands): judge it at that grain, on
        # every cell the box touches (the quickstart's 0.4-0.8 s signatures span 2-4 such frames)
        box = coarse(box)
        span = box.any(2)
    in_box = (pos * box).sum((1, 2)) / total
    in_span = (pos.sum(2) * span).sum(1) / total
    box_area, span_area = box.float().mean((1, 2)), span.float().mean(1)
    # a random map puts box_area of its mass in the box and span_area in the span
    print(f"{name}: in box {in_box.mean():.3f} (area {box_area.mean():.3f}), "
          f"in span {in_span.mean():.3f} (area {span_area.mean():.3f})")
    # measured on the quickstart model: in span 0.51 (LIME) to 0.70 (SHAP) of a 0.25 share, Grad-CAM 0.67 of
    # 0.36; in the box 1.8 (Grad-CAM, coarse) to 23 (SHAP) times its share
    if name != "lime":  # LIME's segments reach past the span: 0.51, too near 0.5 to assert
        assert in_span.mean() > 0.5, "most positive mass should lie in the signature's time span"
    assert in_span.mean() > 1.5 * span_area.mean(), "the signature's time span should hold well above its share"
    assert (in_box / box_area).mean() > (1.5 if name == "gradcam" else 2), "the box should hold well above its share"


def coarse(box: torch.Tensor) -> torch.Tensor:
    """(B, T, F) bool -> every conv_block6 cell it touches, at the spectrogram's size."""
    cells = F.max_pool2d(box.float()[:, None], CAM_CELL, CAM_CELL, ceil_mode=True)
    return F.interpolate(cells, scale_factor=CAM_CELL, mode="nearest")[:, 0, :box.shape[1], :box.shape[2]] > 0
