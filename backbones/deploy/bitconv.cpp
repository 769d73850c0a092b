// Packed 1-bit convolution (XOR + popcount) for the deployed BiNealNet.
//
// Layout: activations NHWC. A binary value is one bit, 1 = -1 and 0 = +1 (the float's sign bit,
// as the fake-quant sign: +0 -> +1), packed 64 channels to a uint64 word along C, or 32 to a uint32 word
// (pack_act unit 32: the deployed convs on the AVX-512 and AVX2 paths). Channels past C
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
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace {

enum Path { SCALAR = 0, AVX2 = 1, AVX512 = 2 };

bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt"); }
bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");  // DQ, VL: the fused epilogue
}

Path resolve(const std::string& p) {
  if (p == "auto") return has_avx512() ? AVX512 : has_avx2() ? AVX2 : SCALAR;
  if (p == "avx512") { TORCH_CHECK(has_avx512(), "this CPU has no AVX-512 VPOPCNTDQ"); return AVX512; }
  if (p == "avx2") { TORCH_CHECK(has_avx2(), "this CPU has no AVX2"); return AVX2; }
  TORCH_CHECK(p == "scalar", "unknown path ", p, " (auto, avx512, avx2, scalar)");
  return SCALAR;
}

// ---------------------------------------------------------------- popcount tiles
// The conv is tiled as P output pixels (neighbours along a row) x OB output channels. Weights are
// re-laid out as blocks of OB channels with word k of all OB channels side by side, (ceil(O/OB), Kw, OB),
// so one vector load covers several channels and each activation word is broadcast once per tile:
// every loaded word is reused P (weights) or OB (activations) times, and the per-channel sums stay in
// vector lanes (no horizontal reduction). A tile computes, for each of its P pixels and OB channels,
// pop = sum over the receptive field of popcount(a XOR w).
constexpr int OB = 16;  // output channels per block (four AVX2 / two AVX-512 vectors of 64-bit lanes)
constexpr int PB = 2;   // output pixels per tile (AVX2: 8 byte-count accumulators of 16 registers)
constexpr int PB_MAX = 4;  // AVX-512 (32 registers): 4-pixel tiles, 8 accumulators; a weight load serves 4 pixels

// The receptive field is read as runs of contiguous words: one per kernel row when dilation is 1 (the KW taps
// of a row sit side by side in the packed NHWC layout), else one per tap. a: first pixel's top-left word;
// step: words between neighbouring pixels; runs[i]: word offset of run i from a; len: words per run;
// wb: the channel block's weights (Kw x OB words, in the same order); pop: P x OB sums.
// out: where a tile that writes its own outputs (the AVX-512 one) puts them; null: it leaves pop for the epilogue.
struct TileOut;
struct TileArgs {
  const uint64_t* a;
  int64_t step;
  const int64_t* runs;
  int64_t nruns, len;
  const uint64_t* wb;
  const TileOut* out = nullptr;
};

// The tile's outputs (the epilogue below, in registers): out/res point at the first pixel's channel o0, pixel q
// at + q*O; no: the block's real channels; s null: int32 K - 2*pop, else float (K - 2*pop) * s + b (+ res).
struct TileOut {
  void* out;
  const float* res;
  int64_t O, no, K;
  const float* s;
  const float* b;
};

template <int P>
inline __attribute__((always_inline)) void tile_generic(const TileArgs& t, int32_t* pop) {
  int64_t s[P][OB] = {};
  for (int64_t k = 0; k < t.nruns; ++k) {
    const uint64_t* a = t.a + t.runs[k];
    const uint64_t* w = t.wb + k * t.len * OB;
    for (int64_t c = 0; c < t.len; ++c)
      for (int p = 0; p < P; ++p) {
        const uint64_t x = a[p * t.step + c];
        for (int j = 0; j < OB; ++j) s[p][j] += __builtin_popcountll(x ^ w[c * OB + j]);
      }
  }
  for (int p = 0; p < P; ++p)
    for (int j = 0; j < OB; ++j) pop[p * OB + j] = static_cast<int32_t>(s[p][j]);
}

template <int P>
void tile_scalar(const TileArgs& t, int32_t* pop) { tile_generic<P>(t, pop); }

template <int P>
__attribute__((target("popcnt"))) void tile_popcnt(const TileArgs& t, int32_t* pop) { tile_generic<P>(t, pop); }

__attribute__((target("avx2,popcnt"))) inline __m256i popcnt_bytes_avx2(__m256i v) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
  __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
  return _mm256_add_epi8(lo, hi);
}

// sum (64-bit) += SAD of the byte counts cnt; cnt = 0
template <int P, int V>
__attribute__((target("avx2"))) inline void flush_avx2(__m256i (&cnt)[P][V], int64_t (&sum)[P][OB]) {
  const __m256i zero = _mm256_setzero_si256();
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) {
      __m256i* d = reinterpret_cast<__m256i*>(&sum[p][4 * v]);
      _mm256_store_si256(d, _mm256_add_epi64(_mm256_load_si256(d), _mm256_sad_epu8(cnt[p][v], zero)));
      cnt[p][v] = zero;
    }
}

// AVX2: byte counts per 64-bit lane (lane = one output channel) add up over at most 31 words
// (31 * 8 < 256), then SAD widens them into 64-bit sums kept in memory (rarely touched).
template <int P>
__attribute__((target("avx2,popcnt"))) void tile_avx2(const TileArgs& t, int32_t* pop) {
  constexpr int V = OB / 4;
  const __m256i zero = _mm256_setzero_si256();
  __m256i cnt[P][V];
  alignas(32) int64_t sum[P][OB] = {};
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) cnt[p][v] = zero;
  int64_t left = 31;  // words that may still be added before the byte counts must be flushed
  const uint64_t* w = t.wb;
  for (int64_t k = 0; k < t.nruns; ++k) {
    const uint64_t* a = t.a + t.runs[k];
    for (int64_t c = 0; c < t.len;) {
      if (left == 0) {
        flush_avx2<P, V>(cnt, sum);
        left = 31;
      }
      const int64_t end = std::min(t.len, c + left);
      left -= end - c;
      for (; c < end; ++c, w += OB) {
        __m256i wv[V];
        for (int v = 0; v < V; ++v) wv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 4 * v));
        for (int p = 0; p < P; ++p) {
          const __m256i x = _mm256_set1_epi64x(static_cast<int64_t>(a[p * t.step + c]));
          for (int v = 0; v < V; ++v)
            cnt[p][v] = _mm256_add_epi8(cnt[p][v], popcnt_bytes_avx2(_mm256_xor_si256(x, wv[v])));
        }
      }
    }
  }
  flush_avx2<P, V>(cnt, sum);
  for (int p = 0; p < P; ++p)
    for (int j = 0; j < OB; ++j) pop[p * OB + j] = static_cast<int32_t>(sum[p][j]);
}

// The epilogue on the accumulators: the same values as epilogue_scalar, op by op (K - 2*pop is exact in float:
// |K| < 2^24), without the round trip through pop and a call per pixel.
template <int P, int V>
__attribute__((target("avx512f,avx512dq,avx512vl"))) inline void epilogue_avx512(const __m512i (&acc)[P][V],
                                                                               const TileOut& o) {
  const __m512i k = _mm512_set1_epi64(o.K);
  for (int v = 0; v < V; ++v) {
    const int64_t n = std::min<int64_t>(8, o.no - 8 * v);
    if (n <= 0) break;
    const __mmask8 m = static_cast<__mmask8>((1u << n) - 1);
    __m256 s, b;
    if (o.s) s = _mm256_maskz_loadu_ps(m, o.s + 8 * v), b = _mm256_maskz_loadu_ps(m, o.b + 8 * v);
    for (int p = 0; p < P; ++p) {
      const __m512i d = _mm512_sub_epi64(k, _mm512_add_epi64(acc[p][v], acc[p][v]));
      const int64_t off = p * o.O + 8 * v;
      if (!o.s) {
        _mm256_mask_storeu_epi32(static_cast<int32_t*>(o.out) + off, m, _mm512_cvtepi64_epi32(d));
        continue;
      }
      __m256 f = _mm256_add_ps(_mm256_mul_ps(_mm512_cvtepi64_ps(d), s), b);
      if (o.res) f = _mm256_add_ps(f, _mm256_maskz_loadu_ps(m, o.res + off));
      _mm256_mask_storeu_ps(static_cast<float*>(o.out) + off, m, f);
    }
  }
}

// AVX-512 VPOPCNTDQ: a 64-bit popcount per lane, summed straight into 64-bit lanes; the epilogue in registers.
template <int P>
__attribute__((target("avx512f,avx512vpopcntdq,avx512dq,avx512vl"))) void tile_avx512(const TileArgs& t, int32_t* pop) {
  constexpr int V = OB / 8;
  __m512i acc[P][V];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) acc[p][v] = _mm512_setzero_si512();
  const uint64_t* w = t.wb;
  for (int64_t k = 0; k < t.nruns; ++k) {
    const uint64_t* a = t.a + t.runs[k];
    for (int64_t c = 0; c < t.len; ++c, w += OB) {
      __m512i wv[V];
      for (int v = 0; v < V; ++v) wv[v] = _mm512_loadu_si512(w + 8 * v);
      for (int p = 0; p < P; ++p) {
        const __m512i x = _mm512_set1_epi64(static_cast<int64_t>(a[p * t.step + c]));
        for (int v = 0; v < V; ++v) acc[p][v] = _mm512_add_epi64(acc[p][v], _mm512_popcnt_epi64(_mm512_xor_si512(x, wv[v])));
      }
    }
  }
  if (t.out) {
    epilogue_avx512<P, V>(acc, *t.out);
    return;
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(pop + p * OB + 8 * v), _mm512_cvtepi64_epi32(acc[p][v]));
}

// 32-bit words (AVX-512 VPOPCNTDQ only), for C with C % 64 in (0, 32] (96 channels: 3 words of 32 bits where
// 64-bit words carry 2 with 32 bits of padding). A vector is 16 channels x 32 bits, the same 512 MACs per
// XOR/popcount/add as 8 channels x 64 bits; blocks of OB32 channels; the sums stay in 32-bit lanes.
constexpr int OB32 = 32;
struct TileArgs32 {
  const uint32_t* a;
  int64_t step;
  const int64_t* runs;
  int64_t nruns, len;
  const uint32_t* wb;
};

template <int P>
__attribute__((target("avx512f,avx512vpopcntdq,avx512dq,avx512vl"))) void tile_avx512_dw(const TileArgs32& t,
                                                                                        const TileOut& o) {
  constexpr int V = OB32 / 16;
  __m512i acc[P][V];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) acc[p][v] = _mm512_setzero_si512();
  const uint32_t* w = t.wb;
  for (int64_t k = 0; k < t.nruns; ++k) {
    const uint32_t* a = t.a + t.runs[k];
    for (int64_t c = 0; c < t.len; ++c, w += OB32) {
      __m512i wv[V];
      for (int v = 0; v < V; ++v) wv[v] = _mm512_loadu_si512(w + 16 * v);
      for (int p = 0; p < P; ++p) {
        const __m512i x = _mm512_set1_epi32(static_cast<int32_t>(a[p * t.step + c]));
        for (int v = 0; v < V; ++v) acc[p][v] = _mm512_add_epi32(acc[p][v], _mm512_popcnt_epi32(_mm512_xor_si512(x, wv[v])));
      }
    }
  }
  // the epilogue of epilogue_avx512, 16 channels per vector (|K - 2*pop| < 2^24: exact in float)
  const __m512i kk = _mm512_set1_epi32(static_cast<int32_t>(o.K));
  for (int v = 0; v < V; ++v) {
    const int64_t n = std::min<int64_t>(16, o.no - 16 * v);
    if (n <= 0) break;
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
    __m512 s, b;
    if (o.s) s = _mm512_maskz_loadu_ps(m, o.s + 16 * v), b = _mm512_maskz_loadu_ps(m, o.b + 16 * v);
    for (int p = 0; p < P; ++p) {
      const __m512i d = _mm512_sub_epi32(kk, _mm512_add_epi32(acc[p][v], acc[p][v]));
      const int64_t off = p * o.O + 16 * v;
      if (!o.s) {
        _mm512_mask_storeu_epi32(static_cast<int32_t*>(o.out) + off, m, d);
        continue;
      }
      __m512 f = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(d), s), b);
      if (o.res) f = _mm512_add_ps(f, _mm512_maskz_loadu_ps(m, o.res + off));
      _mm512_mask_storeu_ps(static_cast<float*>(o.out) + off, m, f);
    }
  }
}

// AVX2 on 32-bit words: byte counts per 32-bit lane (8 channels a vector) add up over at most 31 words, then
// vpmaddubsw + vpmaddwd widen each lane's 4 bytes into its 32-bit sum; writes P x OB32 sums for the epilogue.
template <int P>
__attribute__((target("avx2,popcnt"))) void tile_avx2_dw(const TileArgs32& t, int32_t* pop) {
  constexpr int V = OB32 / 8;
  const __m256i zero = _mm256_setzero_si256(), ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  __m256i cnt[P][V], sum[P][V];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) cnt[p][v] = sum[p][v] = zero;
  auto flush = [&]() __attribute__((target("avx2"))) {
    for (int p = 0; p < P; ++p)
      for (int v = 0; v < V; ++v) {
        const __m256i s16 = _mm256_maddubs_epi16(cnt[p][v], ones8);
        sum[p][v] = _mm256_add_epi32(sum[p][v], _mm256_madd_epi16(s16, ones16));
        cnt[p][v] = zero;
      }
  };
  int64_t left = 31;
  const uint32_t* w = t.wb;
  for (int64_t k = 0; k < t.nruns; ++k) {
    const uint32_t* a = t.a + t.runs[k];
    for (int64_t c = 0; c < t.len;) {
      if (left == 0) {
        flush();
        left = 31;
      }
      const int64_t end = std::min(t.len, c + left);
      left -= end - c;
      for (; c < end; ++c, w += OB32) {
        __m256i wv[V];
        for (int v = 0; v < V; ++v) wv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 8 * v));
        for (int p = 0; p < P; ++p) {
          const __m256i x = _mm256_set1_epi32(static_cast<int32_t>(a[p * t.step + c]));
          for (int v = 0; v < V; ++v)
            cnt[p][v] = _mm256_add_epi8(cnt[p][v], popcnt_bytes_avx2(_mm256_xor_si256(x, wv[v])));
        }
      }
    }
  }
  flush();
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) _mm256_storeu_si256(reinterpret_cast<__m256i*>(pop + p * OB32 + 8 * v), sum[p][v]);
}

using Tile = void (*)(const TileArgs&, int32_t*);

// The tiles of a path, widest first: tiles[i] covers pixels[i] output pixels (a row's remainder takes the
// widest that fits). AVX-512 has the registers for 4-pixel tiles (8 accumulators): each weight vector
// loaded then serves 4 XORs, and the per-tile work (setup, epilogue) is spread over twice the pixels.
// fused: the tiles write their outputs themselves (TileArgs::out).
struct Tiles {
  int n;
  int pixels[3];
  Tile tile[3];
  bool fused;
};

Tiles tiles_for(Path p) {
  if (p == AVX512) return {3, {4, 2, 1}, {tile_avx512<4>, tile_avx512<2>, tile_avx512<1>}, true};
  if (p == AVX2) return {2, {PB, 1, 0}, {tile_avx2<PB>, tile_avx2<1>, nullptr}, false};
  if (__builtin_cpu_supports("popcnt")) return {2, {PB, 1, 0}, {tile_popcnt<PB>, tile_popcnt<1>, nullptr}, false};
  return {2, {PB, 1, 0}, {tile_scalar<PB>, tile_scalar<1>, nullptr}, false};
}

// ---------------------------------------------------------------- epilogue
// n outputs of one pixel: int32 K - 2*pop (s null), else float (K - 2*pop) * s + b (+ r), op by op as before.
void epilogue_scalar(const int32_t* q, int64_t n, int64_t K, const float* s, const float* b, const float* r,
                     void* out) {
  if (!s) {
    int32_t* oi = static_cast<int32_t*>(out);
    for (int64_t j = 0; j < n; ++j) oi[j] = static_cast<int32_t>(K - 2 * q[j]);
    return;
  }
  float* of = static_cast<float*>(out);
  for (int64_t j = 0; j < n; ++j) {
    float v = static_cast<float>(K - 2 * q[j]) * s[j] + b[j];
    of[j] = r ? v + r[j] : v;
  }
}

__attribute__((target("avx2"))) void epilogue_avx2(const int32_t* q, int64_t n, int64_t K, const float* s,
                                                   const float* b, const float* r, void* out) {
  const __m256i k = _mm256_set1_epi32(static_cast<int32_t>(K));
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256i pop = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + j));
    __m256i d = _mm256_sub_epi32(k, _mm256_add_epi32(pop, pop));
    if (!s) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<int32_t*>(out) + j), d);
      continue;
    }
    __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d), _mm256_loadu_ps(s + j)), _mm256_loadu_ps(b + j));
    if (r) v = _mm256_add_ps(v, _mm256_loadu_ps(r + j));
    _mm256_storeu_ps(static_cast<float*>(out) + j, v);
  }
  if (j < n)
    epilogue_scalar(q + j, n - j, K, s ? s + j : nullptr, s ? b + j : nullptr, r ? r + j : nullptr,
                    s ? static_cast<void*>(static_cast<float*>(out) + j) : static_cast<void*>(static_cast<int32_t*>(out) + j));
}

using Epilogue = void (*)(const int32_t*, int64_t, int64_t, const float*, const float*, const float*, void*);

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

__attribute__((target("avx512f"))) void pack_pixel_avx512(const float* x, int64_t C, const float* b0, const float* sl,
                                                           const float* b1, uint64_t* out) {
  const int64_t Cw = (C + 63) / 64;
  const __m512 zero = _mm512_setzero_ps();
  const __m512i sign = _mm512_set1_epi32(static_cast<int32_t>(0x80000000u));
  for (int64_t wd = 0; wd < Cw; ++wd) {
    uint64_t bits = 0;
    const int64_t c0 = wd * 64, c1 = std::min(C, c0 + 64);
    int64_t c = c0;
    for (; c + 16 <= c1; c += 16) {
      __m512 v = _mm512_loadu_ps(x + c);
      if (b0) {
        v = _mm512_add_ps(v, _mm512_loadu_ps(b0 + c));
        const __m512 neg = _mm512_mul_ps(_mm512_loadu_ps(sl + c), v);
        v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), neg, v);  // v > 0 ? v : slope * v
        v = _mm512_add_ps(v, _mm512_loadu_ps(b1 + c));
      }
      const uint64_t m = _mm512_test_epi32_mask(_mm512_castps_si512(v), sign);  // sign bits
      bits |= m << (c - c0);
    }
    if (c < c1) {  // the word's last channels (fewer than 16)
      uint64_t rest;
      pack_pixel_scalar(x + c, c1 - c, b0 ? b0 + c : nullptr, sl ? sl + c : nullptr, b1 ? b1 + c : nullptr, &rest);
      bits |= rest << (c - c0);
    }
    out[wd] = bits;
  }
}

// The stem's max-pool (and ReLU) on NHWC, into the float NHWC the packing and the residuals read. x: float or
// bf16 (the bf16 stem's output; a bf16 widens to float exactly: its bits are the float's top 16). Padding
// never wins the max (as torch's -inf); with relu the max starts at 0, which is ReLU(max) (they commute).
// Float in, float out: equal to torch's max_pool2d (+ relu) bit for bit (a max only picks values).
template <typename T>
inline float widen(T v) { return v; }
template <>
inline float widen(uint16_t v) { uint32_t u = static_cast<uint32_t>(v) << 16; float f; std::memcpy(&f, &u, 4); return f; }

// One output pixel's window, channels [c0, c1): m = max over the window's ``taps`` (pixel pointers) of widen(src[c]).
template <typename T>
inline void max_window_scalar(const T* const* taps, int64_t ntaps, int64_t c0, int64_t c1, float init, float* out) {
  for (int64_t c = c0; c < c1; ++c) {
    float m = init;
    for (int64_t t = 0; t < ntaps; ++t) m = widen(taps[t][c]) > m ? widen(taps[t][c]) : m;
    out[c] = m;
  }
}

__attribute__((target("avx2"))) inline __m256 load8_avx2(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2"))) inline __m256 load8_avx2(const uint16_t* p) {
  __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

template <typename T>
__attribute__((target("avx2"))) void max_window_avx2(const T* const* taps, int64_t ntaps, int64_t C, float init,
                                                     float* out) {
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    __m256 m = _mm256_set1_ps(init);
    for (int64_t t = 0; t < ntaps; ++t) m = _mm256_max_ps(load8_avx2(taps[t] + c), m);  // v > m ? v : m
    _mm256_storeu_ps(out + c, m);
  }
  max_window_scalar(taps, ntaps, c, C, init, out);
}

template <typename T>
void max_pool_rows(const T* px, float* po, int64_t H, int64_t W, int64_t C, int64_t Ho, int64_t Wo, int64_t k,
                   int64_t stride, int64_t pad, bool relu, bool avx, int64_t r0, int64_t r1) {
  std::vector<const T*> taps(k * k);
  const float init = relu ? 0.f : -INFINITY;
  for (int64_t r = r0; r < r1; ++r) {  // r = n * Ho + oy
    const int64_t n = r / Ho, oy = r % Ho;
    const int64_t y0 = std::max<int64_t>(0, oy * stride - pad), y1 = std::min(H, oy * stride - pad + k);
    for (int64_t ox = 0; ox < Wo; ++ox) {
      const int64_t x0 = std::max<int64_t>(0, ox * stride - pad), x1 = std::min(W, ox * stride - pad + k);
      int64_t nt = 0;
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = x0; x < x1; ++x) taps[nt++] = px + ((n * H + y) * W + x) * C;
      float* out = po + (r * Wo + ox) * C;
      if (avx) max_window_avx2(taps.data(), nt, C, init, out);
      else max_window_scalar(taps.data(), nt, 0, C, init, out);
    }
  }
}

}  // namespace

// x: float or bf16 NHWC (N, H, W, C) -> float NHWC (N, Ho, Wo, C): k x k max-pool (k = 1: none) with stride and
// padding, then ReLU if ``relu``.
at::Tensor max_pool(at::Tensor x, int64_t k, int64_t stride, int64_t pad, bool relu, std::string path) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16),
              "max_pool: contiguous float or bf16 NHWC input expected");
  TORCH_CHECK(k >= 1 && stride >= 1 && pad >= 0 && pad <= k / 2, "max_pool: k >= 1, stride >= 1, 0 <= pad <= k/2 expected");
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, "max_pool: input smaller than the window");
  auto out = at::empty({N, Ho, Wo, C}, x.options().dtype(at::kFloat));
  float* po = out.data_ptr<float>();
  const bool avx = resolve(path) != SCALAR;
  const bool bf = x.scalar_type() == at::kBFloat16;
  const void* px = x.data_ptr();
  at::parallel_for(0, N * Ho, 1, [&](int64_t r0, int64_t r1) {
    if (bf) max_pool_rows(static_cast<const uint16_t*>(px), po, H, W, C, Ho, Wo, k, stride, pad, relu, avx, r0, r1);
    else max_pool_rows(static_cast<const float*>(px), po, H, W, C, Ho, Wo, k, stride, pad, relu, avx, r0, r1);
  });
  return out;
}

// x: float NHWC (N, H, W, C); b0/slope/b1: per-channel float (C) or empty (plain sign).
// Returns uint64 (stored as int64) (N, H + 2*ph, W + 2*pw, Cw) with the -1 ring; unit 32: uint32 (stored as
// int32) words, (N, Hp, Wp, ceil(C/32)), the same bits (a 64-bit word's low half is its first 32 channels).
at::Tensor pack_act(at::Tensor x, at::Tensor b0, at::Tensor slope, at::Tensor b1, int64_t ph,
                       int64_t pw, std::string path, int64_t unit) {
  TORCH_CHECK(unit == 64 || unit == 32, "pack_act: unit must be 64 or 32");
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
  const int64_t Cu = unit == 64 ? Cw : (C + 31) / 32, bytes = Cu * unit / 8;  // words and bytes per pixel
  auto out = at::empty({N, Hp, Wp, Cu}, x.options().dtype(unit == 64 ? at::kLong : at::kInt));
  char* po = static_cast<char*>(out.data_ptr());
  const float* px = x.data_ptr<float>();
  std::vector<uint64_t> ring(Cw);  // the -1 value: every valid channel bit set
  for (int64_t wd = 0; wd < Cw; ++wd) {
    int64_t n = std::min<int64_t>(64, C - wd * 64);
    ring[wd] = n == 64 ? ~0ULL : ((1ULL << n) - 1);
  }
  TORCH_CHECK(unit == 64 || Cw <= 64, "pack_act: at most 4096 channels with unit 32");
  const Path kp = resolve(path);
  const auto pack_pixel = kp == AVX512 ? pack_pixel_avx512 : kp == AVX2 ? pack_pixel_avx2 : pack_pixel_scalar;
  at::parallel_for(0, N * Hp, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t n = r / Hp, y = r % Hp - ph;
      char* row = po + r * Wp * bytes;
      uint64_t words[64];  // one pixel's 64-bit words (C <= 4096), when the output keeps 32-bit ones
      for (int64_t xx = 0; xx < Wp; ++xx) {
        int64_t xi = xx - pw;
        char* o = row + xx * bytes;
        if (y < 0 || y >= H || xi < 0 || xi >= W) {
          std::memcpy(o, ring.data(), bytes);
        } else {
          const float* src = px + ((n * H + y) * W + xi) * C;
          uint64_t* dst = unit == 64 ? reinterpret_cast<uint64_t*>(o) : words;
          pack_pixel(src, C, pb0, psl, pb1, dst);
          if (unit == 32) std::memcpy(o, words, bytes);
        }
      }
    }
  });
  return out;
}

// Pack +-1 float weights given as (O, KH, KW, C) contiguous to (O, KH*KW*Cw) words, the receptive field's order
// (ky, kx, channel word); binary_conv re-lays them out in channel blocks for its tiles.
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

// Packed weights (O, Kw) re-laid out for the tiles: blocks of OB channels, word k of the block's channels side by
// side, (ceil(O/OB), Kw, OB); channels past O are zero words. A deployed conv does this once, not per call.
at::Tensor block_weight(at::Tensor wp) {
  TORCH_CHECK(wp.dim() == 2 && wp.is_contiguous() && (wp.scalar_type() == at::kLong || wp.scalar_type() == at::kInt),
              "block_weight: contiguous packed int64 or int32 (O, Kw) weights expected");
  if (wp.scalar_type() == at::kInt) {  // 32-bit words: blocks of OB32 channels
    const int64_t O = wp.size(0), Kd = wp.size(1), NB = (O + OB32 - 1) / OB32;
    auto out = at::zeros({NB, Kd, OB32}, wp.options());
    const int32_t* src = wp.data_ptr<int32_t>();
    int32_t* dst = out.data_ptr<int32_t>();
    for (int64_t o = 0; o < O; ++o)
      for (int64_t k = 0; k < Kd; ++k) dst[((o / OB32) * Kd + k) * OB32 + o % OB32] = src[o * Kd + k];
    return out;
  }
  const int64_t O = wp.size(0), Kw = wp.size(1), NB = (O + OB - 1) / OB;
  auto out = at::zeros({NB, Kw, OB}, wp.options());
  const int64_t* src = wp.data_ptr<int64_t>();
  int64_t* dst = out.data_ptr<int64_t>();
  for (int64_t o = 0; o < O; ++o)
    for (int64_t k = 0; k < Kw; ++k) dst[((o / OB) * Kw + k) * OB + o % OB] = src[o * Kw + k];
  return out;
}

// The checked arguments and the shared setup of a conv call, for words of ``bits`` (64: int64 tensors, blocks of
// OB channels; 32: int32 tensors, blocks of OB32).
struct Conv {
  int64_t N, Hp, Wp, Cu, Ho, Wo, O, K, Ku, NB, R, G, NG, nruns, len;
  bool as_int;
  at::Tensor out, wbt;
  const float *ps, *pb, *pr;
  void* po;
  std::vector<int64_t> runs;
};

Conv setup_conv(const at::Tensor& xp, const at::Tensor& wp, int64_t C, int64_t KH, int64_t KW, int64_t stride,
                int64_t dilation, const at::Tensor& scale, const at::Tensor& bias, const at::Tensor& residual,
                int64_t O, int bits) {
  const auto dtype = bits == 64 ? at::kLong : at::kInt;
  const int64_t ob = bits == 64 ? OB : OB32;
  TORCH_CHECK(xp.dim() == 4 && xp.scalar_type() == dtype && wp.scalar_type() == dtype,
              bits == 64 ? "binary_conv: packed int64 tensors expected"
                         : "binary_conv: 32-bit packed activations (pack_act unit 32) need 32-bit packed weights");
  TORCH_CHECK(xp.is_contiguous() && wp.is_contiguous(), "binary_conv: contiguous packed tensors expected");
  Conv c;
  const bool blocked = wp.dim() == 3;
  if (blocked) {
    TORCH_CHECK(wp.size(2) == ob && O > (wp.size(0) - 1) * ob && O <= wp.size(0) * ob,
                "binary_conv: blocked weights (NB, Kw, ", ob, ") need O in (", (wp.size(0) - 1) * ob, ", ",
                wp.size(0) * ob, "]; got ", O);
  } else {
    TORCH_CHECK(wp.dim() == 2 && (O == -1 || O == wp.size(0)), "binary_conv: (O, Kw) packed weights, O = -1 or O");
    O = wp.size(0);
  }
  c.O = O;
  c.N = xp.size(0), c.Hp = xp.size(1), c.Wp = xp.size(2), c.Cu = xp.size(3);
  TORCH_CHECK(c.Cu == (C + bits - 1) / bits && wp.size(1) == KH * KW * c.Cu,
              "binary_conv: packed shapes do not match C/KH/KW");
  c.Ho = (c.Hp - dilation * (KH - 1) - 1) / stride + 1, c.Wo = (c.Wp - dilation * (KW - 1) - 1) / stride + 1;
  TORCH_CHECK(c.Ho > 0 && c.Wo > 0, "binary_conv: input smaller than the kernel");
  c.K = C * KH * KW, c.Ku = KH * KW * c.Cu;
  c.as_int = scale.numel() == 0;
  c.out = at::empty({c.N, c.Ho, c.Wo, O}, xp.options().dtype(c.as_int ? at::kInt : at::kFloat));
  if (!c.as_int) {
    TORCH_CHECK(scale.numel() == O && bias.numel() == O, "binary_conv: scale and bias of size O");
    TORCH_CHECK(scale.is_contiguous() && bias.is_contiguous() && scale.scalar_type() == at::kFloat &&
                bias.scalar_type() == at::kFloat, "binary_conv: contiguous float scale and bias expected");
  }
  const bool has_res = residual.numel() > 0;
  if (has_res) {
    TORCH_CHECK(residual.sizes() == c.out.sizes() && residual.scalar_type() == at::kFloat,
                "binary_conv: residual must be float NHWC of the output's shape");
    TORCH_CHECK(residual.is_contiguous(), "binary_conv: contiguous residual expected");
  }
  c.ps = c.as_int ? nullptr : scale.data_ptr<float>();
  c.pb = c.as_int ? nullptr : bias.data_ptr<float>();
  c.pr = has_res ? residual.data_ptr<float>() : nullptr;
  c.po = c.out.data_ptr();
  c.NB = (O + ob - 1) / ob;
  c.wbt = blocked ? wp : block_weight(wp);
  // runs of contiguous words in the window (see TileArgs): kernel rows when dilation is 1, else single taps
  const bool rows = dilation == 1;
  c.nruns = rows ? KH : KH * KW, c.len = rows ? KW * c.Cu : c.Cu;
  c.runs.resize(c.nruns);
  for (int64_t i = 0; i < c.nruns; ++i)
    c.runs[i] = rows ? i * c.Wp * c.Cu : ((i / KW) * dilation * c.Wp + (i % KW) * dilation) * c.Cu;
  // work item = (group of channel blocks, output row, block in the group). A group's weights (at most
  // ~128 KiB) stay in L2 while its rows pass, and each output row is finished while it is in cache; the
  // items are split between threads in order, evenly even when there are few rows.
  c.R = c.N * c.Ho, c.G = std::max<int64_t>(1, std::min<int64_t>(c.NB, (128 << 10) / (c.Ku * ob * bits / 8)));
  c.NG = (c.NB + c.G - 1) / c.G;
  return c;
}

// The conv on 32-bit words (pack_act unit 32; the AVX-512 and AVX2 paths); binary_conv below sends it int32 input.
at::Tensor binary_conv_dw(at::Tensor xp, at::Tensor wp, int64_t C, int64_t KH, int64_t KW, int64_t stride,
                          int64_t dilation, at::Tensor scale, at::Tensor bias, at::Tensor residual,
                          std::string path, int64_t O) {
  const Path kp = resolve(path);
  TORCH_CHECK(kp != SCALAR, "binary_conv: 32-bit words need the AVX-512 VPOPCNTDQ or the AVX2 path");
  const Conv c = setup_conv(xp, wp, C, KH, KW, stride, dilation, scale, bias, residual, O, 32);
  const uint32_t* px = reinterpret_cast<const uint32_t*>(xp.data_ptr<int32_t>());
  const uint32_t* wb = reinterpret_cast<const uint32_t*>(c.wbt.data_ptr<int32_t>());
  at::parallel_for(0, c.NG * c.R * c.G, 1, [&](int64_t i0, int64_t i1) {
    alignas(32) int32_t pop[2 * OB32];  // the AVX2 tile's sums
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / (c.R * c.G) * c.G + i % c.G, r = i / c.G % c.R, n = r / c.Ho, oy = r % c.Ho;
      if (b >= c.NB) continue;  // the last group's missing blocks
      const int64_t o0 = b * OB32, no = std::min<int64_t>(OB32, c.O - o0);
      const uint32_t* row = px + (n * c.Hp + oy * stride) * c.Wp * c.Cu;
      for (int64_t ox = 0, np = 0; ox < c.Wo; ox += np) {
        np = c.Wo - ox >= 4 && kp == AVX512 ? 4 : c.Wo - ox >= 2 ? 2 : 1;  // AVX2: 2-pixel tiles (16 registers)
        const int64_t base0 = ((n * c.Ho + oy) * c.Wo + ox) * c.O + o0;
        for (int64_t q = 0; q < np; ++q) {  // the epilogue's lines, fetched while the tile computes
          if (c.pr) __builtin_prefetch(c.pr + base0 + q * c.O, 0);
          __builtin_prefetch(static_cast<char*>(c.po) + (base0 + q * c.O) * 4, 1);
        }
        const TileArgs32 t{row + ox * stride * c.Cu, stride * c.Cu, c.runs.data(), c.nruns, c.len, wb + b * c.Ku * OB32};
        const auto out_at = [&](int64_t base) {
          return c.as_int ? static_cast<void*>(static_cast<int32_t*>(c.po) + base)
                          : static_cast<void*>(static_cast<float*>(c.po) + base);
        };
        if (kp == AVX512) {
          const TileOut o{out_at(base0), c.pr ? c.pr + base0 : nullptr, c.O, no, c.K, c.as_int ? nullptr : c.ps + o0,
                          c.as_int ? nullptr : c.pb + o0};
          if (np == 4) tile_avx512_dw<4>(t, o);
          else if (np == 2) tile_avx512_dw<2>(t, o);
          else tile_avx512_dw<1>(t, o);
          continue;
        }
        if (np == 2) tile_avx2_dw<2>(t, pop);
        else tile_avx2_dw<1>(t, pop);
        for (int64_t q = 0; q < np; ++q) {
          const int64_t base = base0 + q * c.O;
          epilogue_avx2(pop + q * OB32, no, c.K, c.as_int ? nullptr : c.ps + o0, c.as_int ? nullptr : c.pb + o0,
                        c.pr ? c.pr + base : nullptr, out_at(base));
        }
      }
    }
  });
  return c.out;
}

// The conv. xp: packed padded activations (N, Hp, Wp, Cw); wp: packed weights (O, KH*KW*Cw), or already
// blocked by block_weight (then O, the output channels, is given: the blocks round it up to OB).
// Returns, NHWC: int32 dot products (scale empty) or float dot * scale[o] + bias[o] (+ residual NHWC).
at::Tensor binary_conv(at::Tensor xp, at::Tensor wp, int64_t C, int64_t KH, int64_t KW, int64_t stride,
                          int64_t dilation, at::Tensor scale, at::Tensor bias, at::Tensor residual,
                          std::string path, int64_t O) {
  if (xp.scalar_type() == at::kInt)
    return binary_conv_dw(xp, wp, C, KH, KW, stride, dilation, scale, bias, residual, path, O);
  const Conv c = setup_conv(xp, wp, C, KH, KW, stride, dilation, scale, bias, residual, O, 64);
  const uint64_t* px = reinterpret_cast<const uint64_t*>(xp.data_ptr<int64_t>());
  const uint64_t* wb = reinterpret_cast<const uint64_t*>(c.wbt.data_ptr<int64_t>());
  const Path p = resolve(path);
  const Tiles tiles = tiles_for(p);
  const Epilogue epilogue = p != SCALAR && has_avx2() ? epilogue_avx2 : epilogue_scalar;
  at::parallel_for(0, c.NG * c.R * c.G, 1, [&](int64_t i0, int64_t i1) {
    int32_t pop[PB_MAX * OB];
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / (c.R * c.G) * c.G + i % c.G, r = i / c.G % c.R, n = r / c.Ho, oy = r % c.Ho;
      if (b >= c.NB) continue;  // the last group's missing blocks
      const int64_t o0 = b * OB, no = std::min<int64_t>(OB, c.O - o0);
      const TileArgs t0{nullptr, stride * c.Cu, c.runs.data(), c.nruns, c.len, wb + b * c.Ku * OB};
      const uint64_t* row = px + (n * c.Hp + oy * stride) * c.Wp * c.Cu;
      const auto out_at = [&](int64_t base) {
        return c.as_int ? static_cast<void*>(static_cast<int32_t*>(c.po) + base)
                        : static_cast<void*>(static_cast<float*>(c.po) + base);
      };
      for (int64_t ox = 0, np = 0; ox < c.Wo; ox += np) {
        int ti = 0;
        while (tiles.pixels[ti] > c.Wo - ox) ++ti;  // the widest tile that fits (the last covers 1 pixel)
        np = tiles.pixels[ti];
        TileArgs t = t0;
        t.a = row + ox * stride * c.Cu;
        // fetch the epilogue's residual and output lines now, so they arrive while the tile computes
        const int64_t base0 = ((n * c.Ho + oy) * c.Wo + ox) * c.O + o0;
        for (int64_t q = 0; q < np; ++q) {
          if (c.pr) __builtin_prefetch(c.pr + base0 + q * c.O, 0);
          __builtin_prefetch(static_cast<char*>(c.po) + (base0 + q * c.O) * 4, 1);
        }
        if (tiles.fused) {
          const TileOut o{out_at(base0), c.pr ? c.pr + base0 : nullptr, c.O, no, c.K, c.as_int ? nullptr : c.ps + o0,
                          c.as_int ? nullptr : c.pb + o0};
          t.out = &o;
          tiles.tile[ti](t, pop);
          continue;
        }
        tiles.tile[ti](t, pop);
        for (int64_t q = 0; q < np; ++q) {
          const int64_t base = base0 + q * c.O;
          epilogue(pop + q * OB, no, c.K, c.as_int ? nullptr : c.ps + o0, c.as_int ? nullptr : c.pb + o0,
                   c.pr ? c.pr + base : nullptr, out_at(base));
        }
      }
    }
  });
  return c.out;
}


// Microbenchmark of the inner loop alone: one tile (``pixels`` output pixels x OB channels) over a run of
// ``words`` words whose activations and weights sit in L1, called ``reps`` times on the calling thread.
// Returns binary MACs per second (64 per word, per pixel, per channel): the peak the conv's tiles can reach.
double tile_peak(int64_t words, int64_t reps, int64_t pixels, std::string path, int64_t unit) {
  TORCH_CHECK(words >= 1 && reps >= 1, "tile_peak: words and reps must be >= 1");
  TORCH_CHECK(pixels == 1 || pixels == PB || pixels == 4, "tile_peak: pixels must be 1, ", PB, " or 4");
  TORCH_CHECK(unit == 64 || unit == 32, "tile_peak: unit must be 64 or 32");
  const Path p = resolve(path);
  const int64_t ob = unit == 64 ? OB : OB32, nw = words * 64 / unit;  // the same bits in words of ``unit``
  std::vector<uint64_t> a(words * pixels), w(words * ob * unit / 64);
  uint64_t s = 0x9E3779B97F4A7C15ull;  // xorshift: bits that do not compress
  for (auto& v : a) v = (s ^= s << 13, s ^= s >> 7, s ^= s << 17);
  for (auto& v : w) v = (s ^= s << 13, s ^= s >> 7, s ^= s << 17);
  const int64_t run0 = 0;
  std::vector<int32_t> out(pixels * ob);
  std::function<void()> call;
  if (unit == 64) {
    Tile tile = pixels == 1 ? (p == AVX512 ? tile_avx512<1> : p == AVX2 ? tile_avx2<1> : tile_scalar<1>)
              : pixels == 2 ? (p == AVX512 ? tile_avx512<2> : p == AVX2 ? tile_avx2<2> : tile_scalar<2>)
                            : (p == AVX512 ? tile_avx512<4> : p == AVX2 ? tile_avx2<4> : tile_scalar<4>);
    const TileArgs t{a.data(), words, &run0, 1, words, w.data()};
    call = [=, &out]() { tile(t, out.data()); };
  } else {  // the 32-bit tiles the deployed convs run
    TORCH_CHECK(p != SCALAR, "tile_peak: 32-bit words need the AVX-512 VPOPCNTDQ or the AVX2 path");
    TORCH_CHECK(p == AVX512 || pixels <= 2, "tile_peak: the AVX2 32-bit tile covers 1 or 2 pixels");
    const auto* a32 = reinterpret_cast<const uint32_t*>(a.data());
    const TileArgs32 t{a32, nw, &run0, 1, nw, reinterpret_cast<const uint32_t*>(w.data())};
    const TileOut o{out.data(), nullptr, OB32, OB32, nw * 32, nullptr, nullptr};
    auto tile = pixels == 1 ? tile_avx512_dw<1> : pixels == 2 ? tile_avx512_dw<2> : tile_avx512_dw<4>;
    auto tile2 = pixels == 1 ? tile_avx2_dw<1> : tile_avx2_dw<2>;
    call = [=, &out]() { if (p == AVX512) tile(t, o); else tile2(t, out.data()); };
  }
  int64_t sink = 0;
  call();  // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < reps; ++r) {
    call();
    sink += out[r % (pixels * ob)];
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  TORCH_CHECK(sink != INT64_MIN, "tile_peak: impossible sum");  // keeps the calls
  return static_cast<double>(reps) * nw * pixels * ob * unit / sec;
}

std::string cpu_path(std::string path) {
  Path p = resolve(path);
  return p == AVX512 ? "avx512-vpopcntdq" : p == AVX2 ? "avx2" : "scalar";
}

// Registered as torch.ops.binealbench.* (loaded with is_python_module=False).
TORCH_LIBRARY(binealbench, m) {
  m.def("pack_act(Tensor x, Tensor b0, Tensor slope, Tensor b1, int ph, int pw, str path, int unit=64) -> Tensor",
        &pack_act);
  m.def("pack_weight(Tensor w) -> Tensor", &pack_weight);
  m.def("binary_conv(Tensor xp, Tensor wp, int C, int KH, int KW, int stride, int dilation, Tensor scale, "
        "Tensor bias, Tensor residual, str path, int O=-1) -> Tensor", &binary_conv);
  m.def("block_weight(Tensor wp) -> Tensor", &block_weight);
  m.def("max_pool(Tensor x, int k, int stride, int pad, bool relu, str path) -> Tensor", &max_pool);
  m.def("cpu_path(str path) -> str", &cpu_path);
  m.def("tile_peak(int words, int reps, int pixels, str path, int unit=64) -> float", &tile_peak);
}
