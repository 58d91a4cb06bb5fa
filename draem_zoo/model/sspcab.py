"""SSPCAB: the self-supervised predictive convolutional attentive block (Ristea et al., CVPR 2022).

Written after the authors' PyTorch code (``sspcab_torch.py`` in ristea/sspcab), with its module and
parameter names (``conv1`` .. ``conv4``, ``se.fc1``, ``se.fc2``), so that its state dicts map one to one:

* masked convolution: the input is zero-padded by k' + d on every side and four k' x k' convolutions
  (with bias, C -> C channels) read the four corners of a (2k' + 2d + 1)-wide square around each
  output position; their outputs are summed. The centre of that square (a (2d + 1)-wide square
  around the position itself, just the position for d = 0) is never read: the block has to predict
  the masked information from its context. Same-size output.
* ReLU, then squeeze-and-excitation with reduction 8: global average pool, Linear C -> C/8, ReLU,
  Linear C/8 -> C, sigmoid, channel-wise product with the activations.

The block's self-supervised loss is the MSE between its input and its output
(:func:`~.losses.draem_loss` adds it with ``loss.sspcab_weight``, lambda = 0.1 for DRAEM).

For DRAEM the block replaces the reconstructive network's last encoder block (``block5``, the
double conv after the fourth max-pooling), with the loss taken between that block's input (the
pooled features, ``mp4``) and its output, as the DRAEM+SSPCAB integrations do (anomalib's
``Draem(enable_sspcab=True)``: forward hooks on ``encoder.mp4`` and ``encoder.block5``, gradients
through both). Its convolutions get the DRAEM initialisation (N(0, 0.02)) with the rest of the
reconstructive network, as the original training script's ``weights_init`` would give them; the
Linear layers keep PyTorch's default initialisation, which that function does not touch.
One departure: the reduced width is max(1, C // 8), so that fewer than 8 channels still build
(the original would make a Linear of width 0); the paper's networks (C = 8w) are unaffected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SELayer(nn.Module):
    """Squeeze-and-excitation (the original's ``SELayer``): x * sigmoid(fc2(relu(fc1(mean_hw(x)))))."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        reduced = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, reduced, bias=True)
        self.fc2 = nn.Linear(reduced, channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.mean(dim=(2, 3))
        excite = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeeze))))
        return x * excite[:, :, None, None]


class SSPCAB(nn.Module):
    """Masked convolution (sub-kernel ``kernel`` = k', ``dilation`` = d), ReLU, squeeze-and-excitation."""

    def __init__(self, channels: int, kernel: int = 1, dilation: int = 1, reduction: int = 8):
        super().__init__()
        if kernel < 1 or dilation < 0:
            raise ValueError(f"SSPCAB needs kernel >= 1 and dilation >= 0, got {kernel} and {dilation}")
        self.kernel, self.dilation = kernel, dilation
        self.pad = kernel + dilation
        self.border = kernel + 2 * dilation + 1
        self.conv1 = nn.Conv2d(channels, channels, kernel)
        self.conv2 = nn.Conv2d(channels, channels, kernel)
        self.conv3 = nn.Conv2d(channels, channels, kernel)
        self.conv4 = nn.Conv2d(channels, channels, kernel)
        self.se = SELayer(channels, reduction)

    @property
    def receptive_field(self) -> int:
        """Side of the square each output position reads (2k' + 2d + 1), its centre masked."""
        return 2 * self.kernel + 2 * self.dilation + 1

    def masked_conv(self, x: torch.Tensor) -> torch.Tensor:
        """The four corner convolutions, summed (before the ReLU and the attention)."""
        p, b = self.pad, self.border
        x = F.pad(x, (p, p, p, p), "constant", 0.0)
        return (self.conv1(x[:, :, :-b, :-b]) + self.conv2(x[:, :, b:, :-b])
                + self.conv3(x[:, :, :-b, b:]) + self.conv4(x[:, :, b:, b:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(torch.relu(self.masked_conv(x)))


def sspcab_loss(block_input: torch.Tensor, block_output: torch.Tensor) -> torch.Tensor:
    """The block's self-supervised reconstruction loss: MSE between its input and its output (float32)."""
    return F.mse_loss(block_output.float(), block_input.float())
