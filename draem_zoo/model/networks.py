"""The paper's two sub-networks, written width-parametric.

* :class:`ReconstructiveNet`: encoder-decoder without skip connections. Encoder stages
  of widths w, 2w, 4w, 8w, 8w with a 2x max-pool between stages (4 poolings); the
  decoder mirrors it with bilinear 2x upsampling (align_corners=True) followed by a
  conv, as in DRAEM. Default w = 128. With ``sspcab=(k', d)`` its last encoder block (8w -> 8w,
  after the fourth pooling) is the :class:`~.sspcab.SSPCAB` block instead (DRAEM+SSPCAB).
* :class:`DiscriminativeUNet`: U-Net over 6 levels (widths w, 2w, 4w, 8w, 8w, 8w; 5
  poolings) with skip concatenation at every level. Default w = 64.

Both are initialised as the original training script does: conv weights N(0, 0.02),
BatchNorm weight N(1, 0.02) and bias 0. Module names are this project's own;
:mod:`draem_zoo.export.convert` maps the original checkpoint names onto them.
"""

from __future__ import annotations

import torch
from torch import nn

from .sspcab import SSPCAB


def double_conv(cin: int, cmid: int, cout: int | None = None) -> nn.Sequential:
    """conv-BN-ReLU twice (indices 0,1 and 3,4 hold parameters, as the original)."""
    cout = cmid if cout is None else cout
    return nn.Sequential(
        nn.Conv2d(cin, cmid, 3, padding=1),
        nn.BatchNorm2d(cmid),
        nn.ReLU(inplace=True),
        nn.Conv2d(cmid, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def up_conv(cin: int, cout: int) -> nn.Sequential:
    """Bilinear 2x upsampling (align_corners=True) then conv-BN-ReLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def draem_init(module: nn.Module) -> None:
    """The original ``weights_init``: conv N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class PlainEncoder(nn.Module):
    """Stages of double convs separated by 2x max-pooling; returns every stage's output.

    ``last``: a module to use as the last stage instead of its double conv (same widths in and out).
    """

    def __init__(self, in_channels: int, widths: list[int], last: nn.Module | None = None):
        super().__init__()
        chans = [in_channels, *widths]
        n = len(widths)
        self.stages = nn.ModuleList(
            last if (last is not None and i == n - 1) else double_conv(chans[i], chans[i + 1]) for i in range(n)
        )
        self.pool = nn.MaxPool2d(2)
        self.channels = list(widths)
        self.reductions = [2**i for i in range(len(widths))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            if i:
                x = self.pool(x)
            x = stage(x)
            feats.append(x)
        return feats

    def forward_last(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, output) of the last stage: the pooled features it reads and what it makes of them."""
        for i, stage in enumerate(self.stages[:-1]):
            if i:
                x = self.pool(x)
            x = stage(x)
        x = self.pool(x) if len(self.stages) > 1 else x
        return x, self.stages[-1](x)


class ReconstructiveDecoder(nn.Module):
    """No skips: each step upsamples 2x, then a double conv that narrows the width."""

    def __init__(self, widths: list[int], out_channels: int = 3):
        # widths: the channel count entering each upsampling step, deepest first,
        # followed by the final width, e.g. [8w, 4w, 2w, w, w] for the paper.
        super().__init__()
        self.ups = nn.ModuleList(up_conv(widths[i], widths[i]) for i in range(len(widths) - 1))
        self.blocks = nn.ModuleList(
            double_conv(widths[i], widths[i], widths[i + 1]) for i in range(len(widths) - 1)
        )
        self.head = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for up, block in zip(self.ups, self.blocks):
            x = block(up(x))
        return self.head(x)


class ReconstructiveNet(nn.Module):
    """The paper's reconstructive sub-network (base width ``width``, default 128).

    ``sspcab=(k', d)``: the last encoder block is SSPCAB with sub-kernel k' and dilation d;
    ``forward(x, with_sspcab=True)`` then also returns the block's (input, output) for its loss.
    """

    def __init__(self, width: int = 128, in_channels: int = 3, out_channels: int = 3,
                 sspcab: tuple[int, int] | None = None):
        super().__init__()
        w = width
        last = SSPCAB(8 * w, *sspcab) if sspcab is not None else None
        self.has_sspcab = last is not None
        self.encoder = PlainEncoder(in_channels, [w, 2 * w, 4 * w, 8 * w, 8 * w], last)
        self.decoder = ReconstructiveDecoder([8 * w, 4 * w, 2 * w, w, w], out_channels)
        draem_init(self)

    def forward(self, x: torch.Tensor, with_sspcab: bool = False):
        """The reconstruction; with ``with_sspcab``: (reconstruction, (block input, block output) or None)."""
        if not self.has_sspcab:
            rec = self.decoder(self.encoder(x)[-1])
            return (rec, None) if with_sspcab else rec
        block_in, block_out = self.encoder.forward_last(x)
        rec = self.decoder(block_out)
        return (rec, (block_in, block_out)) if with_sspcab else rec


class UNetDecoder(nn.Module):
    """Skip-connected decoder over encoder features given shallow-to-deep.

    ``skip_channels[i]`` is the width of encoder feature ``i``; step ``k`` upsamples the
    running map 2x to the size of feature ``L-2-k``, concatenates it and fuses with a
    double conv of width ``out_widths[k]``.
    """

    def __init__(self, skip_channels: list[int], out_widths: list[int], out_channels: int = 2):
        super().__init__()
        n = len(skip_channels)
        assert len(out_widths) == n - 1
        running = skip_channels[-1]
        ups, blocks = [], []
        for k in range(n - 1):
            skip = skip_channels[n - 2 - k]
            ups.append(up_conv(running, out_widths[k]))
            blocks.append(double_conv(out_widths[k] + skip, out_widths[k]))
            running = out_widths[k]
        self.ups = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(running, out_channels, 3, padding=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for k, (up, block) in enumerate(zip(self.ups, self.blocks)):
            x = block(torch.cat((up(x), feats[len(feats) - 2 - k]), dim=1))
        return self.head(x)


class DiscriminativeUNet(nn.Module):
    """The paper's discriminative sub-network (base width ``width``, default 64)."""

    def __init__(self, width: int = 64, in_channels: int = 6, out_channels: int = 2):
        super().__init__()
        w = width
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w]
        self.encoder = PlainEncoder(in_channels, widths)
        self.decoder = UNetDecoder(widths, [8 * w, 4 * w, 2 * w, w, w], out_channels)
        draem_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
