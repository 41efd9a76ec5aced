"""Eager under PyTorch's defaults is not strict fp32 here, as a cuDNN convolution's on a GPU is not.

cuDNN runs fp32 convolutions in TF32 unless torch.backends.cudnn.allow_tf32 is off, as the reference
sets it. This model does what cuDNN does, on any device: with the flag on (PyTorch's default), its
projection rounds its operands to TF32's 10-bit mantissa. Large activations then put eager outside
atol=rtol=1e-2 of the strict-fp32 reference (as the ResNet-50 logits were on an H200), within
PyTorch's own error.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def tf32(t: torch.Tensor) -> torch.Tensor:
    """Round fp32 to TF32 (10 mantissa bits), to nearest."""
    return ((t.contiguous().view(torch.int32) + 0x1000) & ~0x1FFF).view(torch.float32)


class Model(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, x):
        if torch.backends.cudnn.allow_tf32:
            return F.linear(tf32(x), tf32(self.proj.weight), self.proj.bias)
        return self.proj(x)


def get_inputs():
    return [64 * torch.randn(32, 512)]


def get_init_inputs():
    return [512, 64]
