"""PANNs Cnn14 (Kong et al. 2020) on a spectrogram, with a width parameter (64 = PANNs).

Every nonlinearity and pooling step is its own module instance, used once per forward pass:
DeepLIFT (and so Deep SHAP) only sees modules, and gives wrong attributions through functional
calls or through a module that runs twice. The global max over time is written as a tree of
max(a, b) = b + relu(a - b), which is exactly the max and which DeepLIFT handles (its max-pool
rule does not conserve the attribution sum here).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torchaudio.transforms as AT

from audio_xai.errors import UsageValueError


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, pool: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()
        self.dropout = nn.Dropout(0.2)
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.dropout(self.pool(x))


class MaxTree(nn.Module):
    """Max over the last axis as a tree of b + relu(a - b); one ReLU per tree level."""

    def __init__(self, max_levels: int = 16):
        super().__init__()
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(max_levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = 0
        while x.shape[-1] > 1:
            if level == len(self.relus):
                raise ValueError(f"input too long for MaxTree({len(self.relus)} levels)")
            n = x.shape[-1]
            a, b = x[..., 0:n - 1:2], x[..., 1:n:2]
            y = b + self.relus[level](a - b)
            x = torch.cat([y, x[..., n - 1:]], dim=-1) if n % 2 else y
            level += 1
        return x.squeeze(-1)


class StudySpecAugment(nn.Module):
    """The study's masking (train only): torchaudio's ``FrequencyMasking(10)`` and ``TimeMasking(20)`` with their
    defaults, one stripe of each shared by the whole batch, masked cells set to 0 (dB, as it runs before bn0)."""

    def __init__(self, freq_width: int = 10, time_width: int = 20):
        super().__init__()
        self.freq_mask, self.time_mask = AT.FrequencyMasking(freq_width), AT.TimeMasking(time_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        # torchaudio masks (..., freq, time); ours is (B, 1, T, F)
        return self.time_mask(self.freq_mask(x.transpose(-1, -2))).transpose(-1, -2)


class SpecAugment(nn.Module):
    """SpecAugment-style masking (train only): one frequency and one time stripe per example, multiplied by 0
    (after bn0, so a masked cell is the bin's normalised mean)."""

    def __init__(self, freq_width: int = 10, time_width: int = 20):
        super().__init__()
        self.freq_width, self.time_width = freq_width, time_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        b, _, t, f = x.shape
        keep = torch.ones(b, 1, t, f, device=x.device, dtype=x.dtype)
        for axis, width, size in ((2, self.time_width, t), (3, self.freq_width, f)):
            w = torch.randint(0, width + 1, (b,), device=x.device)
            start = (torch.rand(b, device=x.device) * (size - w).clamp_min(0)).long()
            idx = torch.arange(size, device=x.device)
            stripe = (idx >= start[:, None]) & (idx < (start + w)[:, None])  # (b, size)
            shape = (b, 1, size, 1) if axis == 2 else (b, 1, 1, size)
            keep = keep * (~stripe).view(shape).to(x.dtype)
        return x * keep


# training-time masking: where it runs (before bn0 as the study, after bn0 as this tool did before) or none
SPEC_AUGMENTS = {"study": StudySpecAugment, "after_bn0": SpecAugment, "none": nn.Identity}


class Cnn14(nn.Module):
    """Spectrogram (B, 1, T, F) -> logits (B, num_classes).

    Layer names follow PANNs (``bn0``, ``conv_block1..6``, ``fc1``) so its checkpoint maps on;
    ``head`` replaces PANNs' ``fc_audioset``.
    """

    # what an L-MAC interpreter's decoder reads, from the input up (explain/interpreter.py)
    lmac_layers = tuple(f"conv_block{i}" for i in range(1, 7))

    def __init__(self, num_bins: int = 64, num_classes: int = 50, width: int = 64, spec_augment: str = "study"):
        super().__init__()
        if spec_augment not in SPEC_AUGMENTS:
            raise UsageValueError(f"--model.spec_augment must be one of {', '.join(SPEC_AUGMENTS)}, "
                                  f"got {spec_augment!r}")
        self.num_bins, self.width, self.spec_augment_at = num_bins, width, spec_augment
        self.bn0 = nn.BatchNorm2d(num_bins)
        self.spec_augment = SPEC_AUGMENTS[spec_augment]()
        chans = [1] + [width * 2 ** i for i in range(6)]
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(chans[i], chans[i + 1], pool=i < 5))
        self.time_max = MaxTree()
        self.dropout1 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(chans[-1], chans[-1])
        self.relu_fc1 = nn.ReLU()
        self.dropout2 = nn.Dropout(0.5)
        self.head = nn.Linear(chans[-1], num_classes)
        nn.init.constant_(self.bn0.weight, 1.0)
        nn.init.constant_(self.bn0.bias, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # bn0 normalises each frequency bin. The input is made contiguous first: torch's CPU BatchNorm
        # backward (2.9) returns a wrong input gradient when the transposed view below has the strides of
        # a spectrogram stored time-fastest (what the front-end gives for a batch of one), and is right on
        # the transpose of a contiguous (B, 1, T, F) (tests/test_batch_independence.py checks both layouts)
        if self.spec_augment_at == "study":
            x = self.spec_augment(x)
        x = self.bn0(x.contiguous().transpose(1, 3)).transpose(1, 3)
        if self.spec_augment_at == "after_bn0":
            x = self.spec_augment(x)
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x)
        x = x.mean(dim=3)  # over frequency: (B, C, T')
        x = self.time_max(x) + x.mean(dim=2)
        x = self.dropout1(x)
        x = self.dropout2(self.relu_fc1(self.fc1(x)))
        return self.head(x)
