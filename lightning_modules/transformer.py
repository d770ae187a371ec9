"""A small spectrogram transformer, built as AST is (Gong et al. 2021): the dB spectrogram cut into
time-frequency patches, each projected to a token, a class token in front, position embeddings, a
transformer encoder, and a linear head on the class token. Trained from scratch; the second architecture
that the model contract (``contract.py``) explains.

What the methods make of it (docs/own-model.md, "Bring your own model and data"): Saliency, SmoothGrad, IG,
GradientSHAP, Input x Gradient, occlusion, LIME and the controls need nothing from the model and run;
Grad-CAM has no layer (``gradcam_layer = None``: the only convolution is the patch projection, before every
attention layer, not a last convolutional layer whose channels hold class evidence); attention rollout reads its
attention weights (``attentions``); DeepLIFT and Deep
SHAP refuse it, as softmax attention, GELU and layer norm are nonlinearities their rescale rule (on
``nn.ReLU`` modules) does not see. The sanity check randomises ``head``, the blocks from the last down and
``patch_embed``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from audio_xai.errors import UsageValueError
from .contract import SpectrogramClassifier, TokenAttention
from .features import make_features


def time_positions(frames: int, dim: int, device=None) -> torch.Tensor:
    """(frames, dim) sinusoidal positions (Vaswani et al.): any clip length gets them without training."""
    pos = torch.arange(frames, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(frames, dim, device=device)
    out[:, 0::2], out[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return out


class PatchEmbed(nn.Module):
    """(B, 1, T, F) -> (B, 1 + T' F', dim): non-overlapping patch_time x patch_freq patches (the spectrogram
    padded with zeros, its normalised mean, to whole patches), each projected linearly (a strided
    convolution), with a learned position per frequency patch, a sinusoidal one per time patch, and the class
    token in front."""

    def __init__(self, num_bins: int, dim: int, patch_time: int, patch_freq: int):
        super().__init__()
        self.patch = (patch_time, patch_freq)
        self.proj = nn.Conv2d(1, dim, self.patch, stride=self.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.freq_pos = nn.Parameter(torch.zeros(1, dim, 1, math.ceil(num_bins / patch_freq)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The weights this module holds itself (the sanity check calls it; ``proj`` is a convolution)."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.freq_pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, f = x.shape[2:]
        x = F.pad(x, (0, -f % self.patch[1], 0, -t % self.patch[0]))
        p = self.proj(x)  # (B, dim, T', F')
        p = p + self.freq_pos + time_positions(p.shape[2], p.shape[1], p.device).T[:, :, None]
        tokens = p.flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(len(p), -1, -1), tokens], dim=1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(x.shape))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, N): the softmax that ``forward`` weighs the values with."""
        q, k, _ = self._qkv(x)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


class Block(nn.Module):
    """A pre-norm encoder layer: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SpectrogramTransformerNet(nn.Module):
    """Spectrogram (B, 1, T, F) -> logits (B, num_classes): bn0 (a batch norm per frequency bin, as Cnn14's),
    patch tokens, ``depth`` encoder blocks, the class token's final norm and the head."""

    gradcam_layer = None
    gradcam_reason = ("an attention model: its only convolution is the patch projection, before every attention "
                      "layer, so there is no last convolutional layer for Grad-CAM to weigh")

    def __init__(self, num_bins: int = 64, num_classes: int = 50, dim: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 2.0, patch_time: int = 8, patch_freq: int = 8, dropout: float = 0.0):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(num_bins)
        self.patch_embed = PatchEmbed(num_bins, dim, patch_time, patch_freq)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # bn0 on a contiguous input, as Cnn14's (torch's CPU batch-norm backward on some strided views is wrong)
        x = self.bn0(x.contiguous().transpose(1, 3)).transpose(1, 3)
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))

    def attentions(self, x: torch.Tensor) -> TokenAttention:
        """Every block's attention over the class token and the patches (row-major over the (T', F') grid of
        patches, which the input was padded to)."""
        found = []
        hooks = [b.attn.register_forward_pre_hook(lambda m, args: found.append(m.weights(args[0])))
                 for b in self.blocks]
        try:
            self(x)
        finally:
            for h in hooks:
                h.remove()
        (t, f), (pt, pf) = x.shape[2:], self.patch_embed.patch
        t0 = torch.arange(0, t, pt).repeat_interleave(math.ceil(f / pf))
        f0 = torch.arange(0, f, pf).repeat(math.ceil(t / pt))
        return TokenAttention(found, 1, torch.stack([t0, (t0 + pt).clamp_max(t), f0, (f0 + pf).clamp_max(f)], 1))


class SpectrogramTransformer(SpectrogramClassifier):
    """A small AST-style transformer on the dB spectrogram, trained from scratch.

    Args:
        features: ``mel`` or ``stft``, the front-ends of ``AudioClassifier`` (``filterbank`` as there).
        num_classes: outputs of the head.
        dim: token width; heads: attention heads (``dim`` must divide by it); depth: encoder blocks.
        mlp_ratio: hidden width of each block's MLP over ``dim``.
        patch_time, patch_freq: patch size in frames and bins.
        dropout: in the MLPs, while training (AST's default is none).
        lr: Adam learning rate.
    """

    def __init__(self, features: str = "mel", num_classes: int = 50, dim: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 2.0, patch_time: int = 8, patch_freq: int = 8, dropout: float = 0.0,
                 lr: float = 1e-3, sample_rate: int = 32000, filterbank: str = "htk"):
        super().__init__(num_classes, lr)
        for name, value in (("dim", dim), ("depth", depth), ("heads", heads), ("patch_time", patch_time),
                            ("patch_freq", patch_freq)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageValueError(f"--model.{name} must be a whole number of at least 1, got {value!r}")
        if dim % heads:
            raise UsageValueError(f"--model.dim ({dim}) must divide by --model.heads ({heads})")
        self.features = make_features(features, sample_rate, filterbank)
        self.net = SpectrogramTransformerNet(self.features.num_bins, num_classes, dim, depth, heads, mlp_ratio,
                                             patch_time, patch_freq, dropout)

    @property
    def model_label(self) -> str:
        return f"transformer-{self.features.kind}"
