"""PIKE solution for task 'relu_attention' (relu_attention.py); drop-in: ModelNew replaces Model.
Device: x86_64; driver n/a; torch 2.13.0+cpu; Triton 3.9.0; CUDA None.
Runtime 48.3741 ms vs eager 424.7883 ms: 8.78x [8.04-12.15]; vs torch.compile (default) 8.49x [6.93-9.80]; vs best compile mode (default) 8.49x [6.93-9.80] (re-timed side by side, 5 rounds; [95% interval]).
Verified: 9 trials on held-out inputs [[2, 256, 256]] and at size set 'small_alt'; tolerance atol=0.01, rtol=0.01 (fp32); size set: small.
Precision: fp32 (same as the reference); other tags: cpp_ext.
State-dict compatible: yes: trained weights of Model load into ModelNew.
Found by coa, solution 10 of /tmp/llm2/run/run.db.
Sandbox: bwrap 0.11.0 around candidate code (own PID, network, mount, IPC and user namespaces, no capabilities, system read-only, home, caches and run directories hidden; PIKE's own references, baselines and variants run outside it); memory 17.7 GB of address space (RLIMIT_AS); file size 8 GB; processes 1024 (counted in its PID namespace); output 16 MB.
Noisy: the interval vs compile:default, eager stayed wide (spread eager 40%, compile:default 33%, solution:10 18%, solution:3 71%, solution:9 49%, solution:6 112%, solution:1 47%).
"""

"""ReLU attention: the whole forward pass as ONE C++ extension call, threaded with
torch's own intra-op pool (at::parallel_for), no separate OpenMP runtime.

Observation from the measurements: on this 2-core machine the latency tracks the number of
separate parallel ops far more than the FLOPs (the head-blocked version with ~60 small ops
is the slowest and the noisiest), and a hand-written kernel built with -fopenmp (which pulls
in a second OpenMP runtime next to the libgomp bundled with torch, so two thread pools
spin against each other on 2 cores) also did badly.  So the single change here is:
everything -- bf16->fp32 conversion, both projections, QK^T, ReLU, PV, per-head RMSNorm,
head weight, head merge, bias, bf16 cast -- runs inside one extension call, in 4 phases,
each a single at::parallel_for on torch's own thread pool:

  1. convert x to fp32; convert + pack both weights into 16-column panels (W_q/b_q scaled by
     1/(sqrt(dh)*S) -- relu(c*a) = c*relu(a) -- and head_norm_weight folded into W_o),
  2. QKV projection with a 6x16 AVX2 FMA register-tile GEMM (+bias),
  3. attention, one task per (batch, head): K^T and V packed into panels in an L1/L2-sized
     buffer; 6 query rows at a time: scores (ReLU fused in the tile epilogue), P V with the
     same micro-kernel, RMSNorm over dh, written in (b, s, h*dh) order,
  4. output projection with the same GEMM, +bias, rounded to bf16 into the output.

fp32 maths throughout (within the 1e-2 policy).  Recomputed from live parameters every
call, nothing cached.  Pure-torch fp32 fallback if the extension can't be built.
"""
import math

import torch
import torch.nn as nn

DTYPE = torch.bfloat16

_CPP_SRC = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

static inline float bf2f(uint16_t v) {
  uint32_t u = ((uint32_t)v) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

static inline uint16_t f2bf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                            // RNE
  return (uint16_t)(u >> 16);
}

// o[r][0..16) = (relu?)( sum_k a_r[k] * b[k*16 + 0..16) ), r = 0..5, o rows ldo apart.
template <bool RELU>
static inline void k6x16(const float* a0, const float* a1, const float* a2,
                         const float* a3, const float* a4, const float* a5,
                         const float* b, int64_t K, float* o, int64_t ldo) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * 16);
    const __m256 b1 = _mm256_loadu_ps(b + k * 16 + 8);
    __m256 av;
    av = _mm256_broadcast_ss(a0 + k);
    c00 = _mm256_fmadd_ps(av, b0, c00); c01 = _mm256_fmadd_ps(av, b1, c01);
    av = _mm256_broadcast_ss(a1 + k);
    c10 = _mm256_fmadd_ps(av, b0, c10); c11 = _mm256_fmadd_ps(av, b1, c11);
    av = _mm256_broadcast_ss(a2 + k);
    c20 = _mm256_fmadd_ps(av, b0, c20); c21 = _mm256_fmadd_ps(av, b1, c21);
    av = _mm256_broadcast_ss(a3 + k);
    c30 = _mm256_fmadd_ps(av, b0, c30); c31 = _mm256_fmadd_ps(av, b1, c31);
    av = _mm256_broadcast_ss(a4 + k);
    c40 = _mm256_fmadd_ps(av, b0, c40); c41 = _mm256_fmadd_ps(av, b1, c41);
    av = _mm256_broadcast_ss(a5 + k);
    c50 = _mm256_fmadd_ps(av, b0, c50); c51 = _mm256_fmadd_ps(av, b1, c51);
  }
  if (RELU) {
    const __m256 z = _mm256_setzero_ps();
    c00 = _mm256_max_ps(c00, z); c01 = _mm256_max_ps(c01, z);
    c10 = _mm256_max_ps(c10, z); c11 = _mm256_max_ps(c11, z);
    c20 = _mm256_max_ps(c20, z); c21 = _mm256_max_ps(c21, z);
    c30 = _mm256_max_ps(c30, z); c31 = _mm256_max_ps(c31, z);
    c40 = _mm256_max_ps(c40, z); c41 = _mm256_max_ps(c41, z);
    c50 = _mm256_max_ps(c50, z); c51 = _mm256_max_ps(c51, z);
  }
  _mm256_storeu_ps(o, c00); _mm256_storeu_ps(o + 8, c01); o += ldo;
  _mm256_storeu_ps(o, c10); _mm256_storeu_ps(o + 8, c11); o += ldo;
  _mm256_storeu_ps(o, c20); _mm256_storeu_ps(o + 8, c21); o += ldo;
  _mm256_storeu_ps(o, c30); _mm256_storeu_ps(o + 8, c31); o += ldo;
  _mm256_storeu_ps(o, c40); _mm256_storeu_ps(o + 8, c41); o += ldo;
  _mm256_storeu_ps(o, c50); _mm256_storeu_ps(o + 8, c51);
}

// C[M x N] = A[M x K] @ panels(Bp) + bias ; tiles [t0, t1) of the (N/16) x ceil(M/6) grid,
// column-panel major so a panel stays in L1 across row blocks.
template <bool BF16_OUT>
static void gemm_tiles(const float* A, int64_t M, int64_t K, const float* Bp, const float* bias,
                       void* C, int64_t N, int64_t t0, int64_t t1) {
  const int64_t mb = (M + 5) / 6;
  float tmp[96];
  for (int64_t tix = t0; tix < t1; ++tix) {
    const int64_t jb = tix / mb, ib = tix % mb;
    const int64_t r0 = ib * 6;
    const int64_t nr = std::min<int64_t>(6, M - r0);
    const float* a[6];
    for (int r = 0; r < 6; ++r) a[r] = A + (r0 + std::min<int64_t>(r, nr - 1)) * K;
    k6x16<false>(a[0], a[1], a[2], a[3], a[4], a[5], Bp + jb * K * 16, K, tmp, 16);
    const float* bb = bias + jb * 16;
    for (int64_t r = 0; r < nr; ++r) {
      if (BF16_OUT) {
        uint16_t* dst = reinterpret_cast<uint16_t*>(C) + (r0 + r) * N + jb * 16;
        for (int c = 0; c < 16; ++c) dst[c] = f2bf(tmp[r * 16 + c] + bb[c]);
      } else {
        float* dst = reinterpret_cast<float*>(C) + (r0 + r) * N + jb * 16;
        for (int c = 0; c < 16; ++c) dst[c] = tmp[r * 16 + c] + bb[c];
      }
    }
  }
}

torch::Tensor relu_attn_forward(torch::Tensor x, torch::Tensor wqkv, torch::Tensor bqkv,
                                torch::Tensor wo, torch::Tensor bo, torch::Tensor hw,
                                int64_t H, double scale, double eps) {
  for (auto* t : {&x, &wqkv, &bqkv, &wo, &bo, &hw}) {
    TORCH_CHECK(t->scalar_type() == torch::kBFloat16 && t->is_contiguous(),
                "relu_attn_forward: expected contiguous bf16 tensors");
  }
  TORCH_CHECK(x.dim() == 3, "x must be (B, S, D)");
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2);
  const int64_t dh = D / H;
  TORCH_CHECK(dh * H == D && dh % 16 == 0, "need dh % 16 == 0");
  TORCH_CHECK(wqkv.size(0) == 3 * D && wqkv.size(1) == D && wo.size(0) == D && wo.size(1) == D, "bad weights");
  const int64_t M = B * S;
  const int64_t N1 = 3 * D;
  const int64_t Sp = (S + 15) / 16 * 16;

  auto fopt = x.options().dtype(torch::kFloat32);
  auto xf_t = torch::empty({M, D}, fopt);
  auto wq_t = torch::empty({N1 * D}, fopt);      // panels [N1/16][D][16]
  auto wo_t = torch::empty({D * D}, fopt);       // panels [D/16][D][16]
  auto qkv_t = torch::empty({M, N1}, fopt);
  auto y_t = torch::empty({M, D}, fopt);
  auto out = torch::empty({B, S, D}, x.options());

  const uint16_t* px = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  const uint16_t* pw = reinterpret_cast<const uint16_t*>(wqkv.data_ptr<at::BFloat16>());
  const uint16_t* pb = reinterpret_cast<const uint16_t*>(bqkv.data_ptr<at::BFloat16>());
  const uint16_t* pwo = reinterpret_cast<const uint16_t*>(wo.data_ptr<at::BFloat16>());
  const uint16_t* pbo = reinterpret_cast<const uint16_t*>(bo.data_ptr<at::BFloat16>());
  const uint16_t* phw = reinterpret_cast<const uint16_t*>(hw.data_ptr<at::BFloat16>());
  uint16_t* pout = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  float* xf = xf_t.data_ptr<float>();
  float* wqp = wq_t.data_ptr<float>();
  float* wop = wo_t.data_ptr<float>();
  float* qkv = qkv_t.data_ptr<float>();
  float* y = y_t.data_ptr<float>();

  const float fc = (float)scale;
  const float feps = (float)eps;
  const float inv_dh = 1.0f / (float)dh;

  std::vector<float> bqf((size_t)N1), bof((size_t)D), hwf((size_t)dh);
  for (int64_t n = 0; n < N1; ++n) bqf[n] = bf2f(pb[n]) * (n < D ? fc : 1.0f);
  for (int64_t n = 0; n < D; ++n) bof[n] = bf2f(pbo[n]);
  for (int64_t t = 0; t < dh; ++t) hwf[t] = bf2f(phw[t]);
  const float* bq = bqf.data();
  const float* bov = bof.data();
  const float* hwp = hwf.data();

  const int64_t mb = (M + 5) / 6;
  const int64_t nb1 = N1 / 16;
  const int64_t nb2 = D / 16;
  const int64_t nbh = B * H;

  // ---- phase 1: conversion + packing.  Work items: [0, M) x rows, then nb1 + nb2 panels.
  const int64_t n_items1 = M + nb1 + nb2;
  at::parallel_for(0, n_items1, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t it = i0; it < i1; ++it) {
      if (it < M) {
        const uint16_t* src = px + it * D;
        float* dst = xf + it * D;
        for (int64_t k = 0; k < D; ++k) dst[k] = bf2f(src[k]);
      } else if (it < M + nb1) {
        const int64_t jb = it - M;
        const float sc = (jb * 16 < D) ? fc : 1.0f;  // D % 16 == 0
        float* dst = wqp + jb * D * 16;
        const uint16_t* src = pw + jb * 16 * D;
        for (int64_t k = 0; k < D; ++k)
          for (int64_t c = 0; c < 16; ++c) dst[k * 16 + c] = bf2f(src[c * D + k]) * sc;
      } else {
        const int64_t jb = it - M - nb1;
        float* dst = wop + jb * D * 16;
        const uint16_t* src = pwo + jb * 16 * D;
        for (int64_t k = 0; k < D; ++k) {
          const float hk = hwp[k % dh];
          for (int64_t c = 0; c < 16; ++c) dst[k * 16 + c] = bf2f(src[c * D + k]) * hk;
        }
      }
    }
  });

  // ---- phase 2: qkv = xf @ Wqkv'^T + b
  at::parallel_for(0, nb1 * mb, 8, [&](int64_t t0, int64_t t1) {
    gemm_tiles<false>(xf, M, D, wqp, bq, qkv, N1, t0, t1);
  });

  // ---- phase 3: attention per (batch, head)
  at::parallel_for(0, nbh, 1, [&](int64_t h0, int64_t h1) {
    std::vector<float> buf((size_t)(dh * Sp + dh * S + 6 * Sp + 6 * dh + 64), 0.0f);
    float* Ktp = buf.data();            // [Sp/16][dh][16]  K^T panels, zero-padded keys
    float* Vpp = Ktp + dh * Sp;         // [dh/16][S][16]   V panels
    float* P = Vpp + dh * S;            // [6][Sp]          relu scores
    float* Y = P + 6 * Sp;              // [6][dh]
    const int64_t ld = N1;
    const int64_t nkb = Sp / 16;
    const int64_t ncb = dh / 16;
    for (int64_t bh = h0; bh < h1; ++bh) {
      const int64_t bi = bh / H;
      const int64_t hh = bh % H;
      const float* qb = qkv + bi * S * ld + hh * dh;
      const float* kb = qb + D;
      const float* vb = qb + 2 * D;

      for (int64_t jb = 0; jb < nkb; ++jb) {
        float* dst = Ktp + jb * dh * 16;
        for (int64_t c = 0; c < 16; ++c) {
          const int64_t j = jb * 16 + c;
          if (j < S) {
            const float* kr = kb + j * ld;
            for (int64_t t = 0; t < dh; ++t) dst[t * 16 + c] = kr[t];
          } else {
            for (int64_t t = 0; t < dh; ++t) dst[t * 16 + c] = 0.0f;
          }
        }
      }
      for (int64_t j = 0; j < S; ++j) {
        const float* vr = vb + j * ld;
        for (int64_t cb = 0; cb < ncb; ++cb)
          std::memcpy(Vpp + (cb * S + j) * 16, vr + cb * 16, 16 * sizeof(float));
      }

      for (int64_t i0 = 0; i0 < S; i0 += 6) {
        const int64_t nr = std::min<int64_t>(6, S - i0);
        const float* q[6];
        for (int r = 0; r < 6; ++r) q[r] = qb + (i0 + std::min<int64_t>(r, nr - 1)) * ld;
        for (int64_t jb = 0; jb < nkb; ++jb)
          k6x16<true>(q[0], q[1], q[2], q[3], q[4], q[5], Ktp + jb * dh * 16, dh, P + jb * 16, Sp);
        for (int64_t cb = 0; cb < ncb; ++cb)
          k6x16<false>(P, P + Sp, P + 2 * Sp, P + 3 * Sp, P + 4 * Sp, P + 5 * Sp,
                       Vpp + cb * S * 16, S, Y + cb * 16, dh);
        for (int64_t r = 0; r < nr; ++r) {
          const float* yr = Y + r * dh;
          float ss = 0.0f;
          for (int64_t t = 0; t < dh; ++t) ss += yr[t] * yr[t];
          const float sc = 1.0f / std::sqrt(ss * inv_dh + feps);
          float* dst = y + (bi * S + i0 + r) * D + hh * dh;
          for (int64_t t = 0; t < dh; ++t) dst[t] = yr[t] * sc;
        }
      }
    }
  });

  // ---- phase 4: out = y @ Wo'^T + bo -> bf16
  at::parallel_for(0, nb2 * mb, 8, [&](int64_t t0, int64_t t1) {
    gemm_tiles<true>(y, M, D, wop, bov, pout, D, t0, t1);
  });
  return out;
}
"""

_ext = None
try:
    from torch.utils.cpp_extension import load_inline

    _ext = load_inline(
        name="relu_attn_onecall_atpar_v1",
        cpp_sources=_CPP_SRC,
        functions=["relu_attn_forward"],
        extra_cflags=["-O3", "-mavx2", "-mfma"],
        verbose=False,
    )
except Exception:
    _ext = None


class ModelNew(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.o = nn.Linear(d_model, d_model)
        nn.init.normal_(self.qkv.weight, std=d_model**-0.5)
        nn.init.normal_(self.o.weight, std=d_model**-0.5)
        self.head_norm_weight = nn.Parameter(torch.empty(d_model // n_heads).uniform_(0.5, 1.5))
        self.to(DTYPE)

    def _forward_torch(self, x):
        b, s, d = x.shape
        h = self.n_heads
        dh = d // h
        c = 1.0 / (math.sqrt(dh) * s)
        w_qkv = self.qkv.weight.float()
        b_qkv = self.qkv.bias.float()
        w_qkv[:d].mul_(c)
        b_qkv[:d].mul_(c)
        w_o = self.o.weight.float().mul_(self.head_norm_weight.float().repeat(h))
        qkv = torch.addmm(b_qkv, x.reshape(b * s, d).float(), w_qkv.t())
        t = qkv.view(b, s, 3, h, dh).permute(2, 0, 3, 1, 4).contiguous()
        q = t[0].view(b * h, s, dh)
        k = t[1].view(b * h, s, dh)
        v = t[2].view(b * h, s, dh)
        p = torch.bmm(q, k.transpose(1, 2)).relu_()
        y = torch.bmm(p, v)
        y.mul_(y.square().mean(-1, keepdim=True).add_(1e-6).rsqrt_())
        y = y.view(b, h, s, dh).transpose(1, 2).reshape(b * s, d)
        out = torch.addmm(self.o.bias.float(), y, w_o.t())
        return out.view(b, s, d).to(x.dtype)

    def forward(self, x):
        b, s, d = x.shape
        h = self.n_heads
        dh = d // h
        params = (self.qkv.weight, self.qkv.bias, self.o.weight, self.o.bias, self.head_norm_weight)
        if (_ext is None or dh * h != d or dh % 16 != 0 or x.dtype != torch.bfloat16
                or any(p.dtype != torch.bfloat16 for p in params)):
            return self._forward_torch(x)
        c = 1.0 / (math.sqrt(dh) * s)
        return _ext.relu_attn_forward(
            x.contiguous(), self.qkv.weight.contiguous(), self.qkv.bias.contiguous(),
            self.o.weight.contiguous(), self.o.bias.contiguous(),
            self.head_norm_weight.contiguous(), h, c, 1e-6)
