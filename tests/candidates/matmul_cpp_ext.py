"""Must pass: a C++ extension built with load_inline (relu(a @ b)): built in the build stage, loaded
by the run stage."""
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

_ext = load_inline(
    name="pike_sbx_relu_mm",
    cpp_sources="torch::Tensor relu_mm(torch::Tensor a, torch::Tensor b) { return torch::relu(a.matmul(b)); }",
    functions=["relu_mm"],
)


class ModelNew(nn.Module):
    def forward(self, a, b):
        return _ext.relu_mm(a, b)
