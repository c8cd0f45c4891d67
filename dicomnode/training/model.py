"""The pseudo-healthy network: a small 2D U-Net that restores healthy anatomy in a CT slice.

Input and output are brain-windowed slices scaled to 0..1 (see `HU_WINDOW`); the network
predicts a correction added to its input, so healthy tissue passes through unchanged and
only what looks abnormal is rewritten. Fully convolutional: any height and width divisible
by 8 works; the shipped model is trained and documented for 256x256.

With `mirrored=True` the network also sees its input flipped left to right as a second
channel (built inside the network, so the model still takes one slice): an infarct or a
haematoma is usually one-sided, and the other hemisphere shows what the tissue should look
like in this head. The flip is about the image centre; training poses (±10 mm, ±8° yaw)
teach it to tolerate a head that is not centred.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

HU_WINDOW = (-20.0, 120.0)
BASE_CHANNELS = 16
LEVELS = 4


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PseudoHealthyUNet(nn.Module):
    """U-Net with `levels` resolutions (levels - 1 poolings) and a residual output clamped to 0..1."""

    def __init__(self, base: int = BASE_CHANNELS, levels: int = LEVELS, mirrored: bool = False) -> None:
        super().__init__()
        self.mirrored = mirrored
        chans = [base * 2**i for i in range(levels)]
        self.down = nn.ModuleList()
        cin = 2 if mirrored else 1
        for c in chans:
            self.down.append(_block(cin, c))
            cin = c
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for c_low, c_high in zip(chans[::-1][:-1], chans[::-1][1:], strict=True):
            self.up.append(nn.ConvTranspose2d(c_low, c_high, 2, stride=2))
            self.merge.append(_block(2 * c_high, c_high))
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        x = torch.cat([image, torch.flip(image, dims=[3])], dim=1) if self.mirrored else image
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, merge in zip(self.up, self.merge, strict=True):
            x = up(x)
            x = merge(torch.cat([x, skips.pop()], dim=1))
        return torch.clamp(image + self.head(x), 0.0, 1.0)


def build() -> PseudoHealthyUNet:
    """Factory named by the manifest's `torch_module` (untrained weights; load model.pt)."""
    return PseudoHealthyUNet()


def build_mirrored() -> PseudoHealthyUNet:
    """Factory for the variant that also sees the mirrored slice."""
    return PseudoHealthyUNet(mirrored=True)


def load_weights(model: PseudoHealthyUNet, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict; weights of a single-channel model start a mirrored one.

    The mirrored channel's first-layer weights start at zero, so the widened network
    computes exactly what the single-channel one did and training adds the comparison.
    """
    first = "down.0.0.weight"
    given = state[first]
    if model.mirrored and given.shape[1] == 1:
        state = {**state, first: torch.cat([given, torch.zeros_like(given)], dim=1)}
    model.load_state_dict(state)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
