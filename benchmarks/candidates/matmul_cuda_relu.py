"""A honest CUDA candidate for tests/tasks/matmul.py (relu(a @ b)), built with load_inline: the
gpu_session `sandbox` step evaluates it sandboxed (nvcc in the build's instance, the kernel in the
run's)."""
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

_src = """
#include <torch/extension.h>
#include <cuda_runtime.h>

__global__ void matmul_relu_kernel(const float* a, const float* b, float* c, int M, int N, int K) {
    int row = blockIdx.y * blockDim.y + threadIdx.y;
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (row < M && col < N) {
        float acc = 0.0f;
        for (int k = 0; k < K; ++k) acc += a[row * K + k] * b[k * N + col];
        c[row * N + col] = acc > 0.0f ? acc : 0.0f;
    }
}

torch::Tensor matmul_relu(torch::Tensor a, torch::Tensor b) {
    a = a.contiguous(); b = b.contiguous();
    int M = a.size(0), K = a.size(1), N = b.size(1);
    auto c = torch::empty({M, N}, a.options());
    dim3 block(16, 16), grid((N + 15) / 16, (M + 15) / 16);
    matmul_relu_kernel<<<grid, block>>>(a.data_ptr<float>(), b.data_ptr<float>(), c.data_ptr<float>(), M, N, K);
    return c;
}
"""

_ext = load_inline(name="pike_sbx_matmul_relu", cpp_sources="torch::Tensor matmul_relu(torch::Tensor a, torch::Tensor b);",
                   cuda_sources=_src, functions=["matmul_relu"])


class ModelNew(nn.Module):
    def forward(self, a, b):
        return _ext.matmul_relu(a, b)
