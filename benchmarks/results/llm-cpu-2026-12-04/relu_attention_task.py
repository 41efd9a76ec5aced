"""Vision-transformer self-attention with ReLU in place of softmax, scaled by 1/sequence length (bf16).

ReLU attention (Wortsman et al., 2023): weights = relu(Q K^T / sqrt(d_head)) / SEQ, no row
normalisation, no mask. Each head's output then goes through an RMSNorm over the head dimension
(a per-head "sub-norm", as in RetNet and Differential Transformer), which keeps the output at unit
scale whatever the sequence length, then the output projection. No fused attention kernel in torch
covers this: the [SEQ, SEQ] weights are materialised per head in eager mode.
Input: x [BATCH, SEQ, D_MODEL] (bf16). Output: same shape (bf16).
"""
import math

import torch
import torch.nn as nn

TIER = "modern"

BATCH = 16
SEQ = 1024
D_MODEL = 1024
N_HEADS = 16
DTYPE = torch.bfloat16

SIZES = {
    # A CPU-sized case: 2 sequences of 256 tokens, 8 heads of 32.
    "small": {"BATCH": 2, "SEQ": 256, "D_MODEL": 256, "N_HEADS": 8},
    "small_alt": {"BATCH": 3, "SEQ": 200, "D_MODEL": 256, "N_HEADS": 8},
}


class Model(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.o = nn.Linear(d_model, d_model)
        nn.init.normal_(self.qkv.weight, std=d_model**-0.5)
        nn.init.normal_(self.o.weight, std=d_model**-0.5)
        self.head_norm_weight = nn.Parameter(torch.empty(d_model // n_heads).uniform_(0.5, 1.5))
        self.to(DTYPE)

    def forward(self, x):
        b, s, d = x.shape
        dh = d // self.n_heads
        q, k, v = (t.view(b, s, self.n_heads, dh).transpose(1, 2) for t in self.qkv(x).split(d, dim=-1))
        weights = torch.relu((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(dh))) * (1.0 / s)
        y = (weights @ v).float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6)
        y = self.head_norm_weight * y.to(x.dtype)
        return self.o(y.transpose(1, 2).reshape(b, s, d))


def get_inputs():
    return [torch.randn(BATCH, SEQ, D_MODEL, dtype=DTYPE)]


def get_init_inputs():
    return [D_MODEL, N_HEADS]
