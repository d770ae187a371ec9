"""Attention rollout (explain/attention.py) against a rollout computed here from first principles: the attention
weights from the model's own parameters (the spectrogram transformer) or as transformers returns them (AST), the
rollout as a loop of numpy products, and each cell's value found by looking up the patches that cover it."""
import numpy as np
import pytest
import torch

from audio_xai.errors import UsageError
from explain import make_method
from lightning_modules.transformer import SpectrogramTransformerNet
from tests.helpers import tiny_cnn


def rollout_oracle(attentions: list[np.ndarray], read: list[int]) -> np.ndarray:
    """(N,) of one clip: Abnar & Zuidema's rollout, (0.5 A + 0.5 I) renormalised per layer, multiplied from the
    first layer up, the rows ``read`` averaged."""
    n = attentions[0].shape[-1]
    joint = np.eye(n)
    for layer in attentions:  # (heads, N, N)
        a = 0.5 * layer.mean(0) + 0.5 * np.eye(n)
        a = a / a.sum(1, keepdims=True)
        joint = a @ joint
    return joint[read].mean(0)


def cells_oracle(relevance: np.ndarray, covers, shape) -> np.ndarray:
    """(T, F): each cell the mean of the relevance of the patches ``covers(t, f)`` names, 0 where none."""
    out = np.zeros(shape)
    for t in range(shape[0]):
        for f in range(shape[1]):
            patches = covers(t, f)
            out[t, f] = np.mean([relevance[p] for p in patches]) if patches else 0.0
    return out


def transformer_attentions(net, x: torch.Tensor) -> list[np.ndarray]:
    """The blocks' attention of one spectrogram, from the weights: softmax(q k^T / sqrt(d)) per head."""
    out = []
    with torch.no_grad():
        tokens = net.patch_embed(net.bn0(x.transpose(1, 3)).transpose(1, 3))
        for block in net.blocks:
            h = block.norm1(tokens)[0].numpy()
            w, b = block.attn.qkv.weight.numpy(), block.attn.qkv.bias.numpy()
            q, k, _ = np.split(h @ w.T + b, 3, axis=1)
            heads, d = block.attn.heads, q.shape[1] // block.attn.heads
            layer = []
            for i in range(heads):
                s = q[:, i * d:(i + 1) * d] @ k[:, i * d:(i + 1) * d].T / np.sqrt(d)
                e = np.exp(s - s.max(1, keepdims=True))
                layer.append(e / e.sum(1, keepdims=True))
            out.append(np.stack(layer))
            tokens = block(tokens)
    return out


def test_rollout_of_the_spectrogram_transformer_matches_its_first_principles():
    torch.manual_seed(0)
    model = SpectrogramTransformerNet(num_bins=20, num_classes=4, dim=16, depth=3, heads=2, patch_time=4,
                                      patch_freq=8).eval()
    x = -50 + 15 * torch.randn(2, 1, 22, 20)  # neither axis a whole number of patches: the last ones are padded
    maps = make_method("attention", model, batch_size=8).attribute(x, torch.zeros(2, dtype=torch.long))
    cols = -(-20 // 8)  # patches per row of the (time, frequency) grid
    for i in range(2):
        relevance = rollout_oracle(transformer_attentions(model, x[i:i + 1]), [0])[1:]  # after the class token
        expected = cells_oracle(relevance, lambda t, f: [(t // 4) * cols + f // 8], (22, 20))
        np.testing.assert_allclose(maps[i, 0].numpy(), expected, rtol=1e-5, atol=1e-7)


def test_rollout_of_ast_averages_its_overlapping_patches(tiny_ast):
    """AST's 16 x 16 patches every 10 frames and bands: a cell covered by several patches gets their mean, the
    last frames and bands no patch reaches get 0; the class and distillation tokens' rows are averaged."""
    from lightning_modules.huggingface import HuggingFaceClassifier
    model = HuggingFaceClassifier(str(tiny_ast)).eval()
    net = model.spectrogram_model
    x = model.features(0.1 * torch.randn(2, 14000, generator=torch.Generator().manual_seed(0)))
    maps = make_method("attention", net, batch_size=8).attribute(x, torch.zeros(2, dtype=torch.long))
    frames, bands = x.shape[2:]  # 100 x 32: patches from frames 0, 10, ..., 80 and bands 0, 10
    n_t, n_f = (frames - 16) // 10 + 1, (bands - 16) // 10 + 1

    def covers(t, f):  # token order of the projection's (frequency, time) output, flattened
        return [fi * n_t + ti for fi in range(n_f) for ti in range(n_t)
                if 10 * ti <= t < 10 * ti + 16 and 10 * fi <= f < 10 * fi + 16]

    with torch.no_grad():
        attentions = net.model(input_values=net.inputs(x), output_attentions=True).attentions
    for i in range(2):
        relevance = rollout_oracle([a[i].double().numpy() for a in attentions], [0, 1])[2:]
        np.testing.assert_allclose(maps[i, 0].numpy(), cells_oracle(relevance, covers, (frames, bands)),
                                   rtol=1e-5, atol=1e-7)
    assert (maps[:, :, 96:] == 0).all() and (maps[..., 26:] == 0).all() and (maps[:, :, :96, :26] > 0).all()


def test_a_model_without_attention_is_refused_with_its_reason():
    model = tiny_cnn(num_classes=3)
    with pytest.raises(UsageError, match=r"attention \(rollout\) needs a transformer .* Cnn14 does not \(it gives no "
                                         r"attention weights"):
        make_method("attention", model).check_model(torch.zeros(1, 1, 16, 64))
