"""Attention rollout (Abnar & Zuidema 2020) for transformers that give their attention weights
(``spectrogram_model.attentions(x)``, ``lightning_modules.contract.TokenAttention``: AST, the spectrogram
transformer).

Each layer's attention is averaged over its heads, the residual connection added as the identity, 0.5 A + 0.5 I,
and the rows renormalised; the product of these over the layers, the last on the left, says how much each output
token draws on each input token. The map is the rows of the tokens the classifier reads (the class token; AST's
class and distillation tokens, averaged) over the patch tokens, put back on the spectrogram: a cell gets the mean
of the patches that cover it (AST's patches overlap), 0 where none does (the frames or bands past the last whole
patch). Rollout does not depend on the class explained: every class of a clip gets the same map.
"""
from __future__ import annotations

import torch

from audio_xai.errors import UsageValueError
from .base import AttributionMethod, register
from .batching import chunks


def rollout(weights: list[torch.Tensor]) -> torch.Tensor:
    """(B, N, N): the attention of the last layer's tokens on the first's, through every layer (float64)."""
    out = None
    for w in weights:
        a = w.double().mean(1)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        out = a if out is None else a @ out
    return out


def to_cells(relevance: torch.Tensor, boxes: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(B, P) per-patch values -> (B, T, F): each cell the mean of the patches covering it, 0 where none does."""
    total = relevance.new_zeros(len(relevance), *shape)
    count = relevance.new_zeros(shape)
    for p, (t0, t1, f0, f1) in enumerate(boxes.tolist()):
        total[:, t0:t1, f0:f1] += relevance[:, p, None, None]
        count[t0:t1, f0:f1] += 1
    return total / count.clamp_min(1)


@register("attention")
class AttentionRollout(AttributionMethod):
    label = "Attention rollout"
    gradient_free = True
    in_all = False  # it needs an attention model: `all` stays the methods every model can take

    def check_model(self, x):
        attentions = getattr(self.model, "attentions", None)
        if not callable(attentions):
            why = getattr(self.model, "attention_reason", None) or "it gives no attention weights (no attentions(x))"
            raise UsageValueError(f"attention (rollout) needs a transformer that gives its attention weights over the "
                                  f"spectrogram's patches; {type(self.model).__name__} does not ({why}). Leave "
                                  f"attention out of --explain")
        with torch.no_grad():
            found = attentions(x[:1])
        tokens = found.weights[0].shape[-1] if found.weights else 0
        if not found.weights or tokens != found.special + len(found.boxes):
            raise ValueError(f"{type(self.model).__name__}.attentions gave {len(found.weights)} layers of {tokens} "
                             f"tokens for {found.special} special tokens and {len(found.boxes)} patches")

    @torch.no_grad()
    def attribute(self, x, target, ids=None):
        maps = []
        for rows, xb, _ in chunks(self.batch_size, x, target):
            found = self.model.attentions(xb)
            relevance = rollout(found.weights)[:, :found.special, found.special:].mean(1)
            maps.append(to_cells(relevance[:rows], found.boxes, tuple(x.shape[2:])).float())
        return torch.cat(maps).unsqueeze(1)
