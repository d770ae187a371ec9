"""Planted ground truth: on the synthetic data, attributions of the trained quickstart model point at the
box where each clip's class signature was planted, far more than a random map would."""
import pytest
import torch

from datamodules import ESC50DataModule, read_signatures
from explain import make_method
from explain.localisation import signature_boxes


@pytest.fixture(scope="module")
def explained_clips(quickstart_run, quickstart_model):
    root = quickstart_run / "data" / "quickstart"
    dm = ESC50DataModule(root=str(root), batch_size=80)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    pick = torch.arange(0, len(batch["target"]), 4)  # 20 clips, two per class
    names = [batch["filename"][i] for i in pick]
    with torch.no_grad():
        x = quickstart_model.features(batch["waveform"][pick])
        pred = quickstart_model.net(x).argmax(1)
    correct = pred == batch["target"][pick]
    assert correct.float().mean() >= 0.7
    box, span = signature_boxes(quickstart_model.features, names, read_signatures(root), x.shape[2])
    with torch.no_grad():
        background = quickstart_model.features(dm.background(2, 100)["waveform"])
    return x[correct], pred[correct], [n for n, ok in zip(names, correct) if ok], box[correct], span[correct], background


@pytest.mark.parametrize("name", ["saliency", "gradcam", "lime", "shap"])
def test_positive_attribution_falls_in_the_signature_box(quickstart_model, explained_clips, name):
    x, pred, names, box, span, background = explained_clips
    method = make_method(name, quickstart_model.net, batch_size=64, **({"num_samples": 300} if name == "lime" else {}))
    if method.needs_background:
        method.set_background(background)
    with torch.enable_grad():
        pos = method.attribute(x, pred, ids=names)[:, 0].clamp_min(0)
    total = pos.sum((1, 2))
    keep = total > 0  # signed Grad-CAM can be negative everywhere on a clip
    assert keep.sum() >= 5
    pos, total, box, span = pos[keep], total[keep], box[keep], span[keep]
    in_box = (pos * box).sum((1, 2)) / total
    in_span = (pos.sum(2) * span).sum(1) / total
    box_area, span_area = box.float().mean((1, 2)), span.float().mean(1)
    # a random map puts box_area of its mass in the box and span_area in the span
    print(f"{name}: in box {in_box.mean():.3f} (area {box_area.mean():.3f}), "
          f"in span {in_span.mean():.3f} (area {span_area.mean():.3f})")
    assert in_span.mean() > 0.5, "most positive mass should lie in the signature's time span"
    assert in_span.mean() > 2 * span_area.mean()
    # at least twice a random map's share; Grad-CAM sits lowest, as conv_block6 has 2 frequency rows for 64 bands
    assert (in_box / box_area).mean() > 2, "the box should hold well above a random map's share"
