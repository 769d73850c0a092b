// Packed 1-bit convolution (XOR + popcount) for the deployed BiNealNet.
//
// Layout: activations NHWC. A binary value is one bit, 1 = -1 and 0 = +1 (the float's sign bit,
// as the fake-quant sign: +0 -> +1), packed 64 channels to a uint64 word along C. Channels past C
// in the last word are 0 in both operands, so they XOR to 0 and add nothing. The -1 padding ring
// is stored explicitly (all valid bits set), so the padded conv is exact, dilated convs included.
// dot(a, w) over K = C*KH*KW values of +-1 = K - 2 * popcount(a XOR w).
//
// Paths chosen at run time: AVX-512 VPOPCNTDQ, AVX2 (nibble-table popcount, Mula et al.), scalar.
// Built with -ffp-contract=off so the quantizer's float ops round exactly as PyTorch's do.
// Light headers (no torch/extension.h, no pybind11): the first build is several times faster.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

enum Path { SCALAR = 0, AVX2 = 1, AVX512 = 2 };

bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt"); }
bool has_avx512() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq"); }

Path resolve(const std::string& p) {
  if (p == "auto") return has_avx512() ? AVX512 : has_avx2() ? AVX2 : SCALAR;
  if (p == "avx512") { TORCH_CHECK(has_avx512(), "this CPU has no AVX-512 VPOPCNTDQ"); return AVX512; }
  if (p == "avx2") { TORCH_CHECK(has_avx2(), "this CPU has no AVX2"); return AVX2; }
  TORCH_CHECK(p == "scalar", "unknown path ", p, " (auto, avx512, avx2, scalar)");
  return SCALAR;
}

// ---------------------------------------------------------------- popcount dot products
// pop[j] = sum_k popcount(a[k] ^ w[j][k]) for 4 weight rows at once (the activation word is loaded once).
void pop4_scalar(const uint64_t* a, const uint64_t* const* w, int64_t n, int64_t* pop) {
  int64_t p0 = 0, p1 = 0, p2 = 0, p3 = 0;
  for (int64_t k = 0; k < n; ++k) {
    uint64_t v = a[k];
    p0 += __builtin_popcountll(v ^ w[0][k]);
    p1 += __builtin_popcountll(v ^ w[1][k]);
    p2 += __builtin_popcountll(v ^ w[2][k]);
    p3 += __builtin_popcountll(v ^ w[3][k]);
  }
  pop[0] = p0; pop[1] = p1; pop[2] = p2; pop[3] = p3;
}

__attribute__((target("popcnt"))) void pop4_popcnt(const uint64_t* a, const uint64_t* const* w, int64_t n,
                                                   int64_t* pop) {
  int64_t p0 = 0, p1 = 0, p2 = 0, p3 = 0;
  for (int64_t k = 0; k < n; ++k) {
    uint64_t v = a[k];
    p0 += __builtin_popcountll(v ^ w[0][k]);
    p1 += __builtin_popcountll(v ^ w[1][k]);
    p2 += __builtin_popcountll(v ^ w[2][k]);
    p3 += __builtin_popcountll(v ^ w[3][k]);
  }
  pop[0] = p0; pop[1] = p1; pop[2] = p2; pop[3] = p3;
}

__attribute__((target("avx2,popcnt"))) inline __m256i popcnt_bytes_avx2(__m256i v) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
  __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
  return _mm256_add_epi8(lo, hi);
}

__attribute__((target("avx2,popcnt"))) void pop4_avx2(const uint64_t* a, const uint64_t* const* w, int64_t n,
                                                      int64_t* pop) {
  __m256i acc[4];
  for (int j = 0; j < 4; ++j) acc[j] = _mm256_setzero_si256();
  const __m256i zero = _mm256_setzero_si256();
  int64_t k = 0;
  // byte counts are summed over up to 31 vectors (31 * 8 < 256) before widening with SAD
  while (k + 4 <= n) {
    __m256i b[4];
    for (int j = 0; j < 4; ++j) b[j] = zero;
    int64_t end = std::min(n - (n - k) % 4, k + 4 * 31);
    for (; k < end; k += 4) {
      __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k));
      for (int j = 0; j < 4; ++j)
        b[j] = _mm256_add_epi8(b[j], popcnt_bytes_avx2(_mm256_xor_si256(
                                         v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[j] + k)))));
    }
    for (int j = 0; j < 4; ++j) acc[j] = _mm256_add_epi64(acc[j], _mm256_sad_epu8(b[j], zero));
  }
  for (int j = 0; j < 4; ++j) {
    alignas(32) int64_t t[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), acc[j]);
    int64_t s = t[0] + t[1] + t[2] + t[3];
    for (int64_t r = k; r < n; ++r) s += _mm_popcnt_u64(a[r] ^ w[j][r]);
    pop[j] = s;
  }
}

__attribute__((target("avx512f,avx512vpopcntdq"))) void pop4_avx512(const uint64_t* a, const uint64_t* const* w,
                                                                    int64_t n, int64_t* pop) {
  __m512i acc[4];
  for (int j = 0; j < 4; ++j) acc[j] = _mm512_setzero_si512();
  for (int64_t k = 0; k < n; k += 8) {
    __mmask8 m = n - k >= 8 ? 0xff : static_cast<__mmask8>((1u << (n - k)) - 1);
    __m512i v = _mm512_maskz_loadu_epi64(m, a + k);
    for (int j = 0; j < 4; ++j)
      acc[j] = _mm512_add_epi64(acc[j], _mm512_popcnt_epi64(_mm512_xor_si512(v, _mm512_maskz_loadu_epi64(m, w[j] + k))));
  }
  for (int j = 0; j < 4; ++j) pop[j] = _mm512_reduce_add_epi64(acc[j]);
}

using Pop4 = void (*)(const uint64_t*, const uint64_t* const*, int64_t, int64_t*);

Pop4 pop4_for(Path p) {
  if (p == AVX512) return pop4_avx512;
  if (p == AVX2) return pop4_avx2;
  return __builtin_cpu_supports("popcnt") ? pop4_popcnt : pop4_scalar;
}

// ---------------------------------------------------------------- packing
// One pixel's C floats -> Cw words. With the quantizer (b0, slope, b1 non-null):
// v = x + b0; v = v > 0 ? v : slope * v; v = v + b1  (PyTorch's F.prelu(x + b0, slope) + b1, op by op)
void pack_pixel_scalar(const float* x, int64_t C, const float* b0, const float* sl, const float* b1, uint64_t* out) {
  int64_t Cw = (C + 63) / 64;
  for (int64_t wd = 0; wd < Cw; ++wd) {
    uint64_t bits = 0;
    int64_t c0 = wd * 64, c1 = std::min(C, c0 + 64);
    for (int64_t c = c0; c < c1; ++c) {
      float v = x[c];
      if (b0) {
        v = v + b0[c];
        v = v > 0.f ? v : sl[c] * v;
        v = v + b1[c];
      }
      bits |= static_cast<uint64_t>(std::signbit(v)) << (c - c0);
    }
    out[wd] = bits;
  }
}

__attribute__((target("avx2"))) void pack_pixel_avx2(const float* x, int64_t C, const float* b0, const float* sl,
                                                     const float* b1, uint64_t* out) {
  int64_t Cw = (C + 63) / 64;
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t wd = 0; wd < Cw; ++wd) {
    uint64_t bits = 0;
    int64_t c0 = wd * 64, c1 = std::min(C, c0 + 64), c = c0;
    for (; c + 8 <= c1; c += 8) {
      __m256 v = _mm256_loadu_ps(x + c);
      if (b0) {
        v = _mm256_add_ps(v, _mm256_loadu_ps(b0 + c));
        __m256 neg = _mm256_mul_ps(_mm256_loadu_ps(sl + c), v);
        v = _mm256_blendv_ps(neg, v, _mm256_cmp_ps(v, zero, _CMP_GT_OQ));
        v = _mm256_add_ps(v, _mm256_loadu_ps(b1 + c));
      }
      bits |= static_cast<uint64_t>(static_cast<uint32_t>(_mm256_movemask_ps(v))) << (c - c0);  // sign bits
    }
    for (; c < c1; ++c) {
      float v = x[c];
      if (b0) {
        v = v + b0[c];
        v = v > 0.f ? v : sl[c] * v;
        v = v + b1[c];
      }
      bits |= static_cast<uint64_t>(std::signbit(v)) << (c - c0);
    }
    out[wd] = bits;
  }
}

}  // namespace

// x: float NHWC (N, H, W, C); b0/slope/b1: per-channel float (C) or empty (plain sign).
// Returns uint64 (stored as int64) (N, H + 2*ph, W + 2*pw, Cw) with the -1 ring.
at::Tensor pack_act(at::Tensor x, at::Tensor b0, at::Tensor slope, at::Tensor b1, int64_t ph,
                       int64_t pw, std::string path) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat, "pack_act: float NHWC input expected");
  TORCH_CHECK(x.is_contiguous(), "pack_act: contiguous input expected");
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3), Cw = (C + 63) / 64;
  const int64_t Hp = H + 2 * ph, Wp = W + 2 * pw;
  const bool q = b0.numel() > 0;
  if (q) {
    TORCH_CHECK(b0.numel() == C && slope.numel() == C && b1.numel() == C, "pack_act: per-channel params of size C");
    for (const auto& t : {b0, slope, b1})
      TORCH_CHECK(t.is_contiguous() && t.scalar_type() == at::kFloat, "pack_act: contiguous float params expected");
  }
  const float* pb0 = q ? b0.data_ptr<float>() : nullptr;
  const float* psl = q ? slope.data_ptr<float>() : nullptr;
  const float* pb1 = q ? b1.data_ptr<float>() : nullptr;
  auto out = at::empty({N, Hp, Wp, Cw}, x.options().dtype(at::kLong));
  uint64_t* po = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  const float* px = x.data_ptr<float>();
  std::vector<uint64_t> ring(Cw);  // the -1 value: every valid channel bit set
  for (int64_t wd = 0; wd < Cw; ++wd) {
    int64_t n = std::min<int64_t>(64, C - wd * 64);
    ring[wd] = n == 64 ? ~0ULL : ((1ULL << n) - 1);
  }
  const bool avx = resolve(path) != SCALAR;
  at::parallel_for(0, N * Hp, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t n = r / Hp, y = r % Hp - ph;
      uint64_t* row = po + r * Wp * Cw;
      for (int64_t xx = 0; xx < Wp; ++xx) {
        int64_t xi = xx - pw;
        uint64_t* o = row + xx * Cw;
        if (y < 0 || y >= H || xi < 0 || xi >= W) {
          std::memcpy(o, ring.data(), Cw * sizeof(uint64_t));
        } else {
          const float* src = px + ((n * H + y) * W + xi) * C;
          if (avx) pack_pixel_avx2(src, C, pb0, psl, pb1, o);
          else pack_pixel_scalar(src, C, pb0, psl, pb1, o);
        }
      }
    }
  });
  return out;
}

// Pack +-1 float weights given as (O, KH, KW, C) contiguous to (O, KH*KW*Cw) words, the patch's order.
at::Tensor pack_weight(at::Tensor wh) {
  TORCH_CHECK(wh.dim() == 4 && wh.is_contiguous() && wh.scalar_type() == at::kFloat,
              "pack_weight: contiguous float (O, KH, KW, C) weight expected");
  const int64_t O = wh.size(0), KH = wh.size(1), KW = wh.size(2), C = wh.size(3), Cw = (C + 63) / 64;
  auto out = at::zeros({O, KH * KW * Cw}, wh.options().dtype(at::kLong));
  uint64_t* po = reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>());
  const float* pw = wh.data_ptr<float>();
  for (int64_t i = 0; i < O * KH * KW; ++i) pack_pixel_scalar(pw + i * C, C, nullptr, nullptr, nullptr, po + i * Cw);
  return out;
}

// The conv. xp: packed padded activations (N, Hp, Wp, Cw); wp: packed weights (O, KH*KW*Cw).
// Returns, NHWC: int32 dot products (scale empty) or float dot * scale[o] + bias[o] (+ residual NHWC).
at::Tensor binary_conv(at::Tensor xp, at::Tensor wp, int64_t C, int64_t KH, int64_t KW, int64_t stride,
                          int64_t dilation, at::Tensor scale, at::Tensor bias, at::Tensor residual,
                          std::string path) {
  TORCH_CHECK(xp.dim() == 4 && xp.scalar_type() == at::kLong && wp.scalar_type() == at::kLong,
              "binary_conv: packed int64 tensors expected");
  TORCH_CHECK(xp.is_contiguous() && wp.is_contiguous(), "binary_conv: contiguous packed tensors expected");
  const int64_t N = xp.size(0), Hp = xp.size(1), Wp = xp.size(2), Cw = xp.size(3), O = wp.size(0);
  TORCH_CHECK(Cw == (C + 63) / 64 && wp.size(1) == KH * KW * Cw, "binary_conv: packed shapes do not match C/KH/KW");
  const int64_t Ho = (Hp - dilation * (KH - 1) - 1) / stride + 1, Wo = (Wp - dilation * (KW - 1) - 1) / stride + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, "binary_conv: input smaller than the kernel");
  const int64_t K = C * KH * KW, Kw = KH * KW * Cw;
  const bool as_int = scale.numel() == 0;
  at::Tensor out = at::empty({N, Ho, Wo, O}, xp.options().dtype(as_int ? at::kInt : at::kFloat));
  if (!as_int) {
    TORCH_CHECK(scale.numel() == O && bias.numel() == O, "binary_conv: scale and bias of size O");
    TORCH_CHECK(scale.is_contiguous() && bias.is_contiguous() && scale.scalar_type() == at::kFloat &&
                bias.scalar_type() == at::kFloat, "binary_conv: contiguous float scale and bias expected");
  }
  const bool has_res = residual.numel() > 0;
  if (has_res) {
    TORCH_CHECK(residual.sizes() == out.sizes() && residual.scalar_type() == at::kFloat,
                "binary_conv: residual must be float NHWC of the output's shape");
    TORCH_CHECK(residual.is_contiguous(), "binary_conv: contiguous residual expected");
  }
  const uint64_t* px = reinterpret_cast<const uint64_t*>(xp.data_ptr<int64_t>());
  const uint64_t* pwt = reinterpret_cast<const uint64_t*>(wp.data_ptr<int64_t>());
  const float* ps = as_int ? nullptr : scale.data_ptr<float>();
  const float* pb = as_int ? nullptr : bias.data_ptr<float>();
  const float* pr = has_res ? residual.data_ptr<float>() : nullptr;
  void* po = out.data_ptr();
  Pop4 pop4 = pop4_for(resolve(path));
  const int64_t O4 = (O + 3) / 4 * 4;
  at::parallel_for(0, N * Ho, 1, [&](int64_t r0, int64_t r1) {
    std::vector<uint64_t> patch(Kw);
    std::vector<int64_t> pops(O4);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / Ho, oy = r % Ho;
      for (int64_t ox = 0; ox < Wo; ++ox) {
        for (int64_t ky = 0; ky < KH; ++ky)  // gather the receptive field into one contiguous run of words
          for (int64_t kx = 0; kx < KW; ++kx) {
            const uint64_t* src = px + ((n * Hp + oy * stride + ky * dilation) * Wp + ox * stride + kx * dilation) * Cw;
            std::memcpy(patch.data() + (ky * KW + kx) * Cw, src, Cw * sizeof(uint64_t));
          }
        for (int64_t o = 0; o < O; o += 4) {
          const uint64_t* rows[4];
          for (int j = 0; j < 4; ++j) rows[j] = pwt + std::min(o + j, O - 1) * Kw;
          pop4(patch.data(), rows, Kw, pops.data() + o);
        }
        const int64_t base = ((n * Ho + oy) * Wo + ox) * O;
        if (as_int) {
          int32_t* oi = static_cast<int32_t*>(po) + base;
          for (int64_t o = 0; o < O; ++o) oi[o] = static_cast<int32_t>(K - 2 * pops[o]);
        } else {
          float* of = static_cast<float*>(po) + base;
          for (int64_t o = 0; o < O; ++o) of[o] = static_cast<float>(K - 2 * pops[o]) * ps[o] + pb[o];
          if (pr)
            for (int64_t o = 0; o < O; ++o) of[o] += pr[base + o];
        }
      }
    }
  });
  return out;
}

std::string cpu_path(std::string path) {
  Path p = resolve(path);
  return p == AVX512 ? "avx512-vpopcntdq" : p == AVX2 ? "avx2" : "scalar";
}

// Registered as torch.ops.binealbench.* (loaded with is_python_module=False).
TORCH_LIBRARY(binealbench, m) {
  m.def("pack_act(Tensor x, Tensor b0, Tensor slope, Tensor b1, int ph, int pw, str path) -> Tensor", &pack_act);
  m.def("pack_weight(Tensor w) -> Tensor", &pack_weight);
  m.def("binary_conv(Tensor xp, Tensor wp, int C, int KH, int KW, int stride, int dilation, Tensor scale, "
        "Tensor bias, Tensor residual, str path) -> Tensor", &binary_conv);
  m.def("cpu_path(str path) -> str", &cpu_path);
}
