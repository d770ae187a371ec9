"""Deep SHAP: DeepLIFT's rescale rule averaged over a background set (as captum's DeepLiftShap).

Per clip x and background clip b, DeepLIFT backpropagates the target logit with each ReLU's gradient
replaced by the multiplier (relu(x_in) - relu(b_in)) / (x_in - b_in) (0 where the two are equal), and the attribution is (x - b) times that multiplier, averaged over b. It
sums to f_c(x) - mean_b f_c(b) because the model exposes every nonlinearity as its own ``nn.ReLU``
(see ``lightning_modules/cnn14.py``); a model that does not is refused before the first map
(``check_model``).

``rule="gradient"`` is what the study's code computed (explain/protocol.py): ``shap.DeepExplainer`` on a
Cnn14 made of functional calls, which its DeepLIFT rules never see, gives the mean over background clips b
of grad f_c(b) * (x - b) (the gradient at the background half of its joint batch), with no additivity. The
gradient at b depends only on b and the class, so it is computed once per background set and class:
the map is x * mean_b g_b - mean_b g_b * b.

Unlike captum, which runs the background through the model again next to every clip, the background's
ReLU inputs are recorded once per background set and reused: each (clip, background) pair costs one
forward and one backward, the least this rule can cost.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import AttributionMethod, Option, background_options, register

RULES = ("deeplift", "gradient")

class _Rescale(torch.autograd.Function):
    """ReLU whose backward uses DeepLIFT's multiplier against the reference input ``ref``.

    ``x`` holds (clip, background) pairs with the background index fastest; ``ref`` (n_bg, ...) and
    ``relu_ref`` broadcast over the clips, so no copy of the reference is made per clip.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, ref: torch.Tensor, relu_ref: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x)
        shape = (-1, *ref.shape)
        # (relu(x) - relu(r)) / (x - r) lies in [0, 1]; only x == r gives 0/0, where any multiplier keeps
        # the sum exact (the unit's difference is zero), and 0 is taken. Few passes: this runs on every ReLU.
        mult = y.view(shape) - relu_ref
        mult.div_(x.view(shape) - ref).nan_to_num_(nan=0.0)
        ctx.save_for_backward(mult)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mult,) = ctx.saved_tensors
        return grad * mult.view_as(grad), None, None


@register("shap")
class DeepShap(AttributionMethod):
    label = "SHAP"
    needs_background = True
    aliases = {"shap_background_per_class": "background_per_class", "shap_background_size": "background_size"}
    declared_options = (
        *background_options("(the protocol's 2 per class, 100 in all)"),
        Option("rule", "deeplift", "deeplift (Deep SHAP) or gradient (the study's code: mean of grad f_c(b) * (x - b))",
               str, choices=RULES),
    )

    def __init__(self, model, batch_size: int = 64, seed: int = 0, **options):
        super().__init__(model, batch_size, seed, **options)
        self._grad_terms: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.background: torch.Tensor | None = None
        self._relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        self._refs: dict[nn.Module, torch.Tensor] = {}

    def check_model(self, x):
        if self.rule == "deeplift":  # the gradient rule needs nothing from the model
            from lightning_modules.contract import check_rescale_rule
            check_rescale_rule(self.model, x, "shap", "Deep SHAP")

    @torch.no_grad()
    def set_background(self, background: torch.Tensor) -> None:
        """Record every ReLU's input for the background clips, once."""
        self.background = background
        self._grad_terms = {}
        if self.rule == "gradient":
            return
        store: dict[nn.Module, list[torch.Tensor]] = {m: [] for m in self._relus}
        hooks = [m.register_forward_hook(lambda m, inp, out: store[m].append(inp[0].detach()))
                 for m in self._relus]
        try:
            for chunk in background.split(self.batch_size):
                self.model(chunk)
        finally:
            for h in hooks:
                h.remove()
        self._refs = {m: (torch.cat(v), torch.relu(torch.cat(v))) for m, v in store.items() if v}

    def attribute(self, x, target, ids=None):
        if self.background is None:
            raise RuntimeError("shap needs a background: call set_background() with training spectrograms first")
        bg = self.background.to(x.device, x.dtype)
        if self.rule == "gradient":
            return self._gradient_rule(x, target, bg)
        n_bg = len(bg)
        # calls of at most batch_size (clip, background) pairs: several clips with the whole background,
        # or one clip with a slice of it
        clips_per_call = max(1, self.batch_size // n_bg)
        bg_per_call = min(n_bg, self.batch_size)
        total = torch.zeros_like(x)
        for start in range(0, len(x), clips_per_call):
            sl = slice(start, start + clips_per_call)
            for j in range(0, n_bg, bg_per_call):
                total[sl] += self._pairs(x[sl], target[sl], bg, slice(j, j + bg_per_call))
        return total / n_bg

    def _gradient_rule(self, x: torch.Tensor, target: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for c in target.unique().tolist():
            if c not in self._grad_terms:
                grads = []
                for chunk in bg.split(self.batch_size):
                    chunk = chunk.detach().requires_grad_(True)
                    with torch.enable_grad():
                        (g,) = torch.autograd.grad(self.model(chunk)[:, c].sum(), chunk)
                    grads.append(g)
                g = torch.cat(grads)
                self._grad_terms[c] = (g.mean(0), (g * bg).mean(0))
            mean_g, mean_gb = self._grad_terms[c]
            rows = target == c
            out[rows] = x[rows].detach() * mean_g - mean_gb
        return out

    def _pairs(self, x: torch.Tensor, target: torch.Tensor, bg: torch.Tensor, part: slice) -> torch.Tensor:
        """Sum over the background clips in ``part`` of each clip's DeepLIFT attribution."""
        bg = bg[part]
        k, n_bg = len(x), len(bg)
        # pair r is clip r // n_bg with background clip r % n_bg
        pairs = x.detach().repeat_interleave(n_bg, 0).requires_grad_(True)
        refs = {m: (r[part].to(x.device, x.dtype), rr[part].to(x.device, x.dtype)) for m, (r, rr) in self._refs.items()}
        hooks = [m.register_forward_hook(lambda m, inp, out: _Rescale.apply(inp[0], *refs[m])) for m in refs]
        try:
            with torch.enable_grad():
                out = self.model(pairs)
                chosen = out.gather(1, target.repeat_interleave(n_bg).unsqueeze(1)).sum()
                (grad,) = torch.autograd.grad(chosen, pairs)
        finally:
            for h in hooks:
                h.remove()
        attr = (pairs.detach().view(k, n_bg, *x.shape[1:]) - bg) * grad.view(k, n_bg, *x.shape[1:])
        return attr.sum(1)
