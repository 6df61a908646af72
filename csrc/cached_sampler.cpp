// Cached incremental PixelCNN++ sampling on the CPU: every activation is computed once.
//
// The model arrives lowered to a flat list of ops over activation caches ("nodes", NHWC per
// image), with a per-op schedule: for generation step t, the output positions that become
// computable once pixels < t are final (built and checked in cpixelcnn/cached.py). At step t
// each op computes exactly those positions, then pixel t is sampled from the DMoL parameters at
// its position and written into the input cache. Total arithmetic is one forward pass.
//
// Cost model: every (op, step) of a convolution is one matrix product. Its rows are the
// (position, image) pairs that become computable at that step, its columns the op's taps ×
// input channels (gathered with the input transform applied: im2col), times the weights laid
// out (kh·kw·Cin, Cout). So each weight is read once per step for the whole batch, and the
// product runs in the BLAS linked into torch (MKL's SGEMM/DGEMM in the x86 wheels, threaded by
// MKL for large products, on the calling thread for small ones; a row-split loop where torch
// exports no BLAS). Input preparation and element-wise ops (sum, gate) are split over threads
// when large enough; the pixel sampling is a plain loop. Buffers grow once and are reused.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cached_sampler_plan.h"
#include "sample_pixel.h"

// Fortran BLAS as exported by libtorch_cpu (MKL, LP64). Weak: absent from other torch builds,
// where the loop in matmul_fallback runs instead.
extern "C" {
__attribute__((weak)) void SGEMM(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*, const float*,
                                 const int*, const float*, float*, const int*);
__attribute__((weak)) void DGEMM(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*, const double*,
                                 const int*, const double*, double*, const int*);
// MKL's per-thread thread count: small products run on the calling thread (a hand-off to a
// second thread costs more than they take), large ones use MKL's own threading.
__attribute__((weak)) int MKL_Set_Num_Threads_Local(int);
}

namespace {

// CPIXELCNN_SAMPLER_NO_BLAS=1 forces the plain loop (what torch builds without a BLAS run; tested).
inline bool blas_disabled() {
  static const bool disabled = [] {
    const char* v = std::getenv("CPIXELCNN_SAMPLER_NO_BLAS");
    return v != nullptr && v[0] == '1';
  }();
  return disabled;
}

template <typename T>
using GemmFn = void(const char*, const char*, const int*, const int*, const int*, const T*, const T*, const int*, const T*, const int*, const T*, T*,
                    const int*);
inline GemmFn<float>* blas_for(const float*) { return SGEMM; }
inline GemmFn<double>* blas_for(const double*) { return DGEMM; }

// Column-major C (m x n) += A (m x k) · B (k x n), leading dimensions lda, ldb, ldc. False if no BLAS.
template <typename T>
bool blas_gemm(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc) {
  GemmFn<T>* gemm = blas_for(a);
  if (gemm == nullptr || blas_disabled()) return false;
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k), la = static_cast<int>(lda), lb = static_cast<int>(ldb),
            lc = static_cast<int>(ldc);
  const T one = T(1);
  gemm("N", "N", &mi, &ni, &ki, &one, a, &la, b, &lb, &one, c, &lc);
  return true;
}

using namespace cpixelcnn::cuda;  // op types, input modes, transforms, shifts: one definition for every engine
using namespace cpixelcnn;        // op_spec columns, input checks

template <typename T>
inline T elu(T v) {
  return v > T(0) ? v : std::expm1(v);
}

// float32 expm1 without a libm call, so loops over it vectorise: x = n·ln2 + r with |r| <= ln2/2,
// expm1(x) = 2^n·expm1(r) + (2^n - 1), expm1(r) by its Taylor series to r^7 (error < 1e-9
// relative on |r| <= 0.35, well under float's ulp). For the elu branch, x <= 0: x >= -88 keeps
// 2^n a normal float, and below that expm1 is -1 in float anyway.
inline float expm1_nonpositive(float x) {
  x = std::max(x, -88.0f);
  const float shifted = x * 1.44269504088896341f + 12582912.0f;  // round to nearest via the 1.5·2^23 trick
  const float n = shifted - 12582912.0f;
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-06f;  // ln2 split hi/lo
  const float p = r + r * r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040))))));
  const int32_t exponent = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &exponent, sizeof(scale));
  return scale * p + (scale - 1.0f);
}

// v[k] <- elu(v[k]) and, with neg, neg[k] <- elu(-v[k]) (concat_elu's second half), k < n.
// Compiled for AVX-512, AVX2 and baseline x86-64, picked at load time.
__attribute__((target_clones("avx512f", "avx2", "default"))) void elu_f32(float* __restrict__ v, float* __restrict__ neg, int64_t n) {
  if (neg) {
    for (int64_t k = 0; k < n; ++k) {
      const float a = v[k];
      neg[k] = a < 0.0f ? -a : expm1_nonpositive(-a);
      v[k] = a > 0.0f ? a : expm1_nonpositive(a);
    }
  } else {
    for (int64_t k = 0; k < n; ++k) v[k] = v[k] > 0.0f ? v[k] : expm1_nonpositive(v[k]);
  }
}

// Same for float64 (and any T): libm's expm1, the reference the float64 exactness tests rely on.
template <typename T>
void elu_any(T* v, T* neg, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    if (neg) neg[k] = elu(-v[k]);
    v[k] = elu(v[k]);
  }
}
inline void elu_any(float* v, float* neg, int64_t n) { elu_f32(v, neg, n); }

template <typename T>
struct Node {
  T* data;  // B x H x W x C
  int64_t c, h, w;
  inline T* at(int64_t b, int64_t i, int64_t j) const { return data + ((b * h + i) * w + j) * c; }
};

// The transformed input rows of one convolution (transform(combine(inputs)), cin_eff channels),
// computed once per position instead of once per tap that reads it. A ring of ``rows`` input
// rows: slot y % rows holds row y, and ``row_of`` records which row each (slot, column) holds,
// so a stale slot is recomputed, never misread.
template <typename T>
struct Window {
  int64_t rows = 0, w = 0, c = 0;  // rows == 0: the op reads its input as it is
  std::vector<T> data;             // B x rows x w x c
  std::vector<int64_t> row_of;     // rows x w, -1 = empty
  T* at(int64_t b, int64_t y, int64_t x) { return data.data() + ((b * rows + y % rows) * w + x) * c; }
};

template <typename T>
struct Runner {
  std::vector<Node<T>> nodes;
  std::vector<const int64_t*> spec;
  std::vector<const T*> weight, bias, gamma, beta;
  std::vector<const int32_t*> positions;
  std::vector<const int64_t*> offsets;

  // v <- transform(inputs at (b, y, x)); returns its length
  int64_t gather(const int64_t* s, int64_t b, int64_t y, int64_t x, T* v) const {
    const Node<T>& a = nodes[s[cIn0]];
    const T* pa = a.at(b, y, x);
    int64_t n = a.c;
    if (s[cMode] == kConcat) {
      const Node<T>& bn = nodes[s[cIn1]];
      const T* pb = bn.at(b, y, x);
      for (int64_t k = 0; k < a.c; ++k) v[k] = pa[k];
      for (int64_t k = 0; k < bn.c; ++k) v[a.c + k] = pb[k];
      n = a.c + bn.c;
    } else if (s[cMode] == kSum) {
      const T* pb = nodes[s[cIn1]].at(b, y, x);
      for (int64_t k = 0; k < n; ++k) v[k] = pa[k] + pb[k];
    } else {
      for (int64_t k = 0; k < n; ++k) v[k] = pa[k];
    }
    if (s[cTransform] == kElu) {
      elu_any(v, static_cast<T*>(nullptr), n);
    } else if (s[cTransform] == kConcatElu) {  // [elu(v), elu(-v)]
      elu_any(v, v + n, n);
      n *= 2;
    }
    return n;
  }

  int64_t batch = 0;
  std::vector<Window<T>> windows;                // per op
  std::vector<T> cols, acc;                      // im2col rows, product rows (grown once, reused)
  std::vector<std::array<int64_t, 2>> active;    // output positions of this (op, step) that are computed
  std::vector<std::array<int64_t, 2>> todo;      // input positions to transform into the window

  // C[M x N] += X[M x K] · W[K x N], all row-major: BLAS is column-major, so ask it for
  // C^T = W^T · X^T (one call; the BLAS threads it). Without a BLAS, rows are split over threads.
  static void matmul(const T* x, int64_t m, int64_t k, const T* w, int64_t n, T* c) {
    if (MKL_Set_Num_Threads_Local != nullptr) {
      thread_local int current = -1;
      const int wanted = m * n * k < (int64_t(1) << 22) ? 1 : 0;  // 0: MKL's global setting
      if (wanted != current) MKL_Set_Num_Threads_Local(current = wanted);
    }
    if (blas_gemm(n, m, k, w, n, x, k, c, n)) return;
    at::parallel_for(0, m, std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, n * k)), [&](int64_t r0, int64_t r1) {
      matmul_fallback(x + r0 * k, r1 - r0, k, w, n, c + r0 * n);
    });
  }

  // C[m x n] += X[m x k] · W[k x n], row-major, without a BLAS.
  static void matmul_fallback(const T* x, int64_t m, int64_t k, const T* w, int64_t n, T* c) {
    for (int64_t r = 0; r < m; ++r) {
      T* out = c + r * n;
      for (int64_t kk = 0; kk < k; ++kk) {
        const T v = x[r * k + kk];
        if (v == T(0)) continue;  // zero taps (padding, shifted-in rows, off-stride deconv taps)
        const T* wrow = w + kk * n;
        for (int64_t co = 0; co < n; ++co) out[co] += v * wrow[co];
      }
    }
  }

  // Convolution or transposed convolution of every position scheduled in [begin, end) of op.
  void matrix_op(int64_t op, int64_t begin, int64_t end) {
    const int64_t* s = spec[op];
    const Node<T>& out = nodes[s[cOut]];
    const Node<T>& in = nodes[s[cIn0]];
    const bool is_conv = s[cType] == kConv;
    const int64_t cin = is_conv ? s[cCinEff] : in.c, kh = s[cKh], kw = s[cKw], stride = s[cStride];
    const int64_t k = kh * kw * cin, n = out.c;
    active.clear();
    for (int64_t p = begin; p < end; ++p) {
      const int64_t i = positions[op][p] / out.w, j = positions[op][p] % out.w;
      if (is_conv && ((s[cShift] == kShiftDown && i == 0) || (s[cShift] == kShiftRight && j == 0))) {
        for (int64_t b = 0; b < batch; ++b) std::fill_n(out.at(b, i, j), n, T(0));  // the shifted-in zero row/column
        continue;
      }
      active.push_back({i, j});
    }
    if (active.empty()) return;
    const int64_t m = static_cast<int64_t>(active.size()) * batch;
    if (static_cast<int64_t>(cols.size()) < m * k) cols.resize(m * k);
    if (static_cast<int64_t>(acc.size()) < m * n) acc.resize(m * n);
    Window<T>& win = windows[op];
    const int64_t shift_i = is_conv && s[cShift] == kShiftDown, shift_j = is_conv && s[cShift] == kShiftRight;
    bool windowed = is_conv && win.rows > 0;
    if (windowed) {  // the input rows this step reads must fit the ring; else gather directly (step 0's padding)
      int64_t lo = active.front()[0], hi = lo;
      for (const auto& a : active) lo = std::min(lo, a[0]), hi = std::max(hi, a[0]);
      windowed = (hi - lo) * stride + kh <= win.rows;
    }
    if (windowed) {  // transform each newly read input position once, for every image
      todo.clear();
      for (const auto& a : active) {
        for (int64_t ki = 0; ki < kh; ++ki) {
          const int64_t y = (a[0] - shift_i) * stride - s[cPadTop] + ki;
          if (y < 0 || y >= in.h) continue;
          for (int64_t kj = 0; kj < kw; ++kj) {
            const int64_t x = (a[1] - shift_j) * stride - s[cPadLeft] + kj;
            if (x < 0 || x >= in.w) continue;
            int64_t& held = win.row_of[(y % win.rows) * win.w + x];
            if (held == y) continue;
            held = y;
            todo.push_back({y, x});
          }
        }
      }
      const int64_t jobs = static_cast<int64_t>(todo.size()) * batch;
      at::parallel_for(0, jobs, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, cin)), [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) {
          const auto& yx = todo[q / batch];
          gather(s, q % batch, yx[0], yx[1], win.at(q % batch, yx[0], yx[1]));
        }
      });
    }
    at::parallel_for(0, m, std::max<int64_t>(1, 16384 / std::max<int64_t>(k, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r % batch;
        int64_t i = active[r / batch][0], j = active[r / batch][1];
        T* row = cols.data() + r * k;
        if (is_conv) {
          i -= shift_i;
          j -= shift_j;
          for (int64_t ki = 0; ki < kh; ++ki) {
            const int64_t y = i * stride - s[cPadTop] + ki;
            for (int64_t kj = 0; kj < kw; ++kj) {
              const int64_t x = j * stride - s[cPadLeft] + kj;
              T* dst = row + (ki * kw + kj) * cin;
              if (y < 0 || y >= in.h || x < 0 || x >= in.w) {
                std::fill_n(dst, cin, T(0));
              } else if (windowed) {
                std::memcpy(dst, win.at(b, y, x), sizeof(T) * cin);
              } else {
                gather(s, b, y, x, dst);
              }
            }
          }
        } else {  // transposed: output (i, j) is the uncropped output (i, j + pad_left)
          const int64_t jj = j + s[cPadLeft];
          for (int64_t ki = 0; ki < kh; ++ki) {
            const int64_t yy = i - ki;
            const bool row_ok = yy >= 0 && yy % stride == 0 && yy / stride < in.h;
            for (int64_t kj = 0; kj < kw; ++kj) {
              const int64_t xx = jj - kj;
              T* dst = row + (ki * kw + kj) * cin;
              if (row_ok && xx >= 0 && xx % stride == 0 && xx / stride < in.w) {
                std::memcpy(dst, in.at(b, yy / stride, xx / stride), sizeof(T) * cin);
              } else {
                std::fill_n(dst, cin, T(0));
              }
            }
          }
        }
        std::memcpy(acc.data() + r * n, bias[op], sizeof(T) * n);
      }
    });
    matmul(cols.data(), m, k, weight[op], n, acc.data());
    for (int64_t r = 0; r < m; ++r) std::memcpy(out.at(r % batch, active[r / batch][0], active[r / batch][1]), acc.data() + r * n, sizeof(T) * n);
  }

  void add(int64_t op, int64_t b, int64_t i, int64_t j) const {
    const int64_t* s = spec[op];
    const Node<T>& out = nodes[s[cOut]];
    const T* pa = nodes[s[cIn0]].at(b, i, j);
    const T* pb = nodes[s[cIn1]].at(b, i, j);
    T* po = out.at(b, i, j);
    for (int64_t k = 0; k < out.c; ++k) po[k] = pa[k] + pb[k];
  }

  // out = x + (γa·a + βa)·σ(γb·b + βb), h = [a | b]
  void gated(int64_t op, int64_t b, int64_t i, int64_t j) const {
    const int64_t* s = spec[op];
    const Node<T>& out = nodes[s[cOut]];
    const int64_t f = out.c;
    const T* px = nodes[s[cIn0]].at(b, i, j);
    const T* ph = nodes[s[cIn1]].at(b, i, j);
    const T* g = gamma[op] ? gamma[op] + b * 2 * f : nullptr;
    const T* be = beta[op] ? beta[op] + b * 2 * f : nullptr;
    T* po = out.at(b, i, j);
    for (int64_t k = 0; k < f; ++k) {
      T a = ph[k], gate_in = ph[f + k];
      if (g) { a *= g[k]; gate_in *= g[f + k]; }
      if (be) { a += be[k]; gate_in += be[f + k]; }
      po[k] = px[k] + a / (T(1) + std::exp(-gate_in));
    }
  }
};

template <typename T>
void run(Runner<T>& r, int64_t input_node, int64_t params_node, int64_t height, int64_t width, int64_t channels, int64_t bits,
         const double* noise, int64_t first_sampled) {
  const int64_t n_ops = static_cast<int64_t>(r.spec.size());
  const int64_t n_out = r.nodes[params_node].c;
  std::vector<double> value(static_cast<size_t>(channels));
  for (int64_t t = 0; t < height * width; ++t) {
    for (int64_t op = 0; op < n_ops; ++op) {
      const int64_t begin = r.offsets[op][t], end = r.offsets[op][t + 1];
      if (begin == end) continue;
      const int64_t type = r.spec[op][cType];
      if (type == kConv || type == kDeconv) {
        r.matrix_op(op, begin, end);
        continue;
      }
      const int64_t out_w = r.nodes[r.spec[op][cOut]].w, channels_out = r.nodes[r.spec[op][cOut]].c;
      const int64_t jobs = (end - begin) * r.batch;
      at::parallel_for(0, jobs, std::max<int64_t>(1, 8192 / channels_out), [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t pos = r.positions[op][begin + q / r.batch], b = q % r.batch;
          if (type == kAdd) {
            r.add(op, b, pos / out_w, pos % out_w);
          } else {
            r.gated(op, b, pos / out_w, pos % out_w);
          }
        }
      });
    }
    if (t < first_sampled) continue;  // a given pixel (completion): already in the input cache
    const int64_t i = t / width, j = t % width;
    for (int64_t b = 0; b < r.batch; ++b) {
      cpixelcnn::sample_one(r.nodes[params_node].at(b, i, j), n_out, noise + ((b * height + i) * width + j) * (1 + channels), channels, bits, value.data());
      T* x = r.nodes[input_node].at(b, i, j);
      for (int64_t c = 0; c < channels; ++c) x[c] = static_cast<T>(value[c]);
    }
  }
}

// nodes: one NHWC tensor (B, H, W, C) per node, the input node pre-filled (image zeros, ones
// channel set inside the image). Returns nothing: the input node holds the samples afterwards.
void cached_sample(std::vector<torch::Tensor> nodes, torch::Tensor op_spec, std::vector<torch::Tensor> weights, std::vector<torch::Tensor> biases,
                   std::vector<torch::Tensor> gammas, std::vector<torch::Tensor> betas, std::vector<torch::Tensor> positions,
                   std::vector<torch::Tensor> offsets, int64_t input_node, int64_t params_node, int64_t height, int64_t width,
                   int64_t channels, int64_t bits, torch::Tensor noise, int64_t first_sampled) {
  const SamplerInputs in{nodes, op_spec, weights, biases, gammas, betas, positions, offsets, input_node, params_node, height, width, channels, bits, noise, first_sampled};
  check_sampler_inputs(in, c10::kCPU);
  const int64_t n_ops = op_spec.size(0);
  const int64_t batch = nodes[0].size(0);
  AT_DISPATCH_FLOATING_TYPES(nodes[0].scalar_type(), "cached_sample", [&] {
    Runner<scalar_t> r;
    r.batch = batch;
    for (auto& n : nodes) r.nodes.push_back({n.data_ptr<scalar_t>(), n.size(3), n.size(1), n.size(2)});
    for (int64_t op = 0; op < n_ops; ++op) {
      const int64_t* s = op_spec.data_ptr<int64_t>() + op * cCols;
      r.spec.push_back(s);
      r.weight.push_back(data_or_null<scalar_t>(weights[op]));
      r.bias.push_back(data_or_null<scalar_t>(biases[op]));
      r.gamma.push_back(data_or_null<scalar_t>(gammas[op]));
      r.beta.push_back(data_or_null<scalar_t>(betas[op]));
      r.positions.push_back(positions[op].data_ptr<int32_t>());
      r.offsets.push_back(offsets[op].data_ptr<int64_t>());
      Window<scalar_t> win;
      if (s[cType] == kConv && (s[cMode] != kSingle || s[cTransform] != kNone)) {  // a transform worth computing once
        win.rows = s[cKh] + 2 * s[cStride];
        win.w = nodes[s[cIn0]].size(2);
        win.c = s[cCinEff];
        win.data.resize(static_cast<size_t>(batch * win.rows * win.w * win.c));
        win.row_of.assign(static_cast<size_t>(win.rows * win.w), -1);
      }
      r.windows.push_back(std::move(win));
    }
    run<scalar_t>(r, input_node, params_node, height, width, channels, bits, noise.data_ptr<double>(), first_sampled);
  });
}

}  // namespace

void register_cached_sampler(pybind11::module& m) {
  m.def("cached_sample", &cached_sample, "Cached incremental PixelCNN++ sampling over a lowered op list (CPU)");
}
