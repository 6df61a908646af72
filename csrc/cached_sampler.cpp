// Cached incremental PixelCNN++ sampling on the CPU: every activation is computed once.
//
// The model arrives lowered to a flat list of ops over activation caches ("nodes", NHWC per
// image), with a per-op schedule: for generation step t, the output positions that become
// computable once pixels < t are final (built and checked in cpixelcnn/cached.py). At step t
// each op computes exactly those positions, then pixel t is sampled from the DMoL parameters at
// its position and written into the input cache. Total arithmetic is one forward pass.
//
// Cost model: every (op, step) of a convolution is one matrix product whose rows are the
// (position, image) pairs that become computable at that step and whose columns are the op's
// output channels; each weight is read once per step for the whole batch. The product runs in
// our tile kernels (cached_sampler_gemm.h: AVX-512, AVX2+FMA or baseline vectors, picked at
// load time) reading their inputs through per-tap pointers — no im2col copy — and writing
// straight into the output cache. An op's input transform (elu, concat_elu of a sum or concat)
// is applied once per input position, into a small ring of rows (Window), not once per tap.
//
// Before the loop, a dry run over the schedule lays out each step's work (positions, window
// fills) and finds how many rows of each intermediate node are ever live at once; the engine
// holds those nodes as rings of that many rows (a few megabytes instead of the whole forward
// pass's activations). A team of threads (torch's thread count) runs the loop together: each
// product is split over output channels when its weights are large (each thread streams its
// share of them) and over row tiles otherwise; window fills, element-wise ops and the pixel
// draws are split over positions and images; a spinning barrier separates dependent phases.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#ifdef __linux__
#include <sched.h>
#endif
#include <array>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "cached_sampler_plan.h"
#include "sample_pixel.h"

// The tile kernels, built once per instruction set (see cached_sampler_gemm.h): each inclusion
// reads the five CPIXELCNN_GEMM_* parameters defined just above it.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CPIXELCNN_X86 1
#define CPIXELCNN_GEMM_NS gemm_avx512
#define CPIXELCNN_GEMM_TARGET __attribute__((target("avx512f,fma")))
#define CPIXELCNN_GEMM_BYTES 64
#define CPIXELCNN_GEMM_ROWS 8  // 8 x 3 accumulators of 32 vector registers
#define CPIXELCNN_GEMM_VECS 3
#include "cached_sampler_gemm.h"  // undefines the five parameters
#define CPIXELCNN_GEMM_NS gemm_avx2
#define CPIXELCNN_GEMM_TARGET __attribute__((target("avx2,fma")))
#define CPIXELCNN_GEMM_BYTES 32
#define CPIXELCNN_GEMM_ROWS 4  // 4 x 3 accumulators of 16 vector registers
#define CPIXELCNN_GEMM_VECS 3
#include "cached_sampler_gemm.h"  // undefines the five parameters
#endif
#define CPIXELCNN_GEMM_NS gemm_baseline
#define CPIXELCNN_GEMM_TARGET
#define CPIXELCNN_GEMM_BYTES 16
#define CPIXELCNN_GEMM_ROWS 4
#define CPIXELCNN_GEMM_VECS 2
#include "cached_sampler_gemm.h"  // undefines the five parameters

namespace {

using namespace cpixelcnn::lowered;  // op types, input modes, transforms, shifts: one definition for every engine
using namespace cpixelcnn;           // op_spec columns, input checks

template <typename T>
using TileFn = void (*)(int, const int*, int, const T* const*, const T*, long, const T*, T* const*, int);

// One build of the tile kernels: lanes per vector, rows and vectors of a full tile.
template <typename T>
struct Tiles {
  const char* isa;
  int lanes, rows, vecs;
  std::vector<TileFn<T>> fns;  // [(R - 1) * vecs + V - 1]
  TileFn<T> get(int r, int v) const { return fns[(r - 1) * vecs + v - 1]; }
};

template <typename T, typename Table>
Tiles<T> tiles_from(const char* isa, const Table& table, int bytes) {
  Tiles<T> t{isa, bytes / static_cast<int>(sizeof(T)), static_cast<int>(table.size()), static_cast<int>(table[0].size()), {}};
  for (const auto& row : table)
    for (auto fn : row) t.fns.push_back(fn);
  return t;
}

// The widest build this CPU runs, or the one CPIXELCNN_SAMPLER_ISA names (avx512, avx2,
// baseline: how the tests run every build on one machine).
inline std::string sampler_isa() {
  static const std::string chosen = [] {
    bool avx512 = false, avx2 = false;
#ifdef CPIXELCNN_X86
    __builtin_cpu_init();
    avx512 = __builtin_cpu_supports("avx512f");
    avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    const char* want = std::getenv("CPIXELCNN_SAMPLER_ISA");
    if (want == nullptr || want[0] == '\0') return std::string(avx512 ? "avx512" : avx2 ? "avx2" : "baseline");
    const std::string w(want);
    TORCH_CHECK(w == "avx512" || w == "avx2" || w == "baseline", "CPIXELCNN_SAMPLER_ISA must be avx512, avx2 or baseline, got '", w, "'");
    TORCH_CHECK(w != "avx512" || avx512, "CPIXELCNN_SAMPLER_ISA=avx512, but this CPU (or build) has no AVX-512");
    TORCH_CHECK(w != "avx2" || avx2, "CPIXELCNN_SAMPLER_ISA=avx2, but this CPU (or build) has no AVX2 with FMA");
    return w;
  }();
  return chosen;
}

template <typename T>
Tiles<T> tiles_for_cpu() {
  const std::string isa = sampler_isa();
#ifdef CPIXELCNN_X86
  if (isa == "avx512") return tiles_from<T>("avx512", gemm_avx512::tile_table<T>(), 64);
  if (isa == "avx2") return tiles_from<T>("avx2", gemm_avx2::tile_table<T>(), 32);
#endif
  return tiles_from<T>("baseline", gemm_baseline::tile_table<T>(), 16);
}

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
#ifdef CPIXELCNN_X86
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void elu_f32(float* __restrict__ v, float* __restrict__ neg, int64_t n) {
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

// One activation cache. rows == h: the whole (padded) map; rows < h: a ring in which slot
// i % rows holds row i (the plan guarantees no row is overwritten while still to be read).
template <typename T>
struct Node {
  T* data;  // B x rows x W x C
  int64_t c, h, w, rows;
  int64_t image_stride() const { return rows * w * c; }
  int64_t offset(int64_t i, int64_t j) const { return ((i % rows) * w + j) * c; }
  T* at(int64_t b, int64_t i, int64_t j) const { return data + b * image_stride() + offset(i, j); }
};

// The transformed input rows of one convolution (transform(combine(inputs)), cin_eff channels),
// computed once per position instead of once per tap that reads it: a ring of ``rows`` input
// rows, slot y % rows holding row y. Which positions to fill at each step is decided in the
// plan (a stale slot is refilled, never misread).
template <typename T>
struct Window {
  int64_t rows = 0, w = 0, c = 0;  // rows == 0: the op reads its input as it is
  std::vector<T> data;             // B x rows x w x c
  int64_t image_stride() const { return rows * w * c; }
  int64_t offset(int64_t y, int64_t x) const { return ((y % rows) * w + x) * c; }
  T* at(int64_t b, int64_t y, int64_t x) { return data.data() + b * image_stride() + offset(y, x); }
};

using Position = std::array<int32_t, 2>;  // (i, j)

// The work of one op at one step: index ranges into the plan's position lists.
struct OpStep {
  int32_t op;
  int64_t zero0, zero1;  // shifted-in zero positions of the output (written, not computed)
  int64_t act0, act1;    // output positions computed (all positions of an element-wise op)
  int64_t fill0, fill1;  // input positions to transform into the op's window first
  bool windowed;         // taps read the window; false with a transform: gathered per row (step 0's many rows)
};

// A sense-free spinning barrier for a team that lives for one sampling run.
class Barrier {
 public:
  void set_size(int n) { n_ = n; }  // before any thread waits
  void wait() {
    if (n_ == 1) return;
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins < 2048) {  // a few microseconds: the usual wait, for a thread finishing its share
#ifdef CPIXELCNN_X86
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();  // the thread we wait for may need this core
      }
    }
  }

 private:
  int n_ = 1;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> generation_{0};
};

// torch's thread count, but no more threads than CPUs this process may run on: the team spins
// at its barriers, and a thread waiting for a descheduled one would waste whole time slices.
inline int team_size() {
  int64_t cpus = std::max<unsigned>(1, std::thread::hardware_concurrency());
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = std::max(1, CPU_COUNT(&set));
#endif
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({static_cast<int64_t>(at::get_num_threads()), cpus, 64})));
}

// [begin, end) of thread tid's share of n items split over team threads.
inline std::pair<int64_t, int64_t> share(int64_t n, int tid, int team) { return {n * tid / team, n * (tid + 1) / team}; }

constexpr int kMaxTaps = 16;  // kh * kw of any op (the model's largest is 2 x 3)

template <typename T>
struct Runner {
  int64_t batch = 0;
  int team = 1;
  Tiles<T> tiles;
  std::vector<Node<T>> nodes;
  std::vector<std::vector<T>> held;  // ring storage of the nodes the engine holds
  std::vector<const int64_t*> spec;
  std::vector<const T*> weight, bias, gamma, beta;  // weight: (taps·cin, ldw), bias: ldw (zero-padded columns)
  std::vector<int64_t> ldw;
  std::vector<std::vector<T>> padded;  // owns padded copies where C_out is not a whole number of vectors
  std::vector<const int32_t*> positions;
  std::vector<const int64_t*> offsets;
  std::vector<Window<T>> windows;  // per op
  std::vector<T> zeros;            // cin_eff zeros: the input of taps outside the map

  // the plan
  std::vector<OpStep> work;            // in execution order
  std::vector<int64_t> step_begin;     // work of step t: [step_begin[t], step_begin[t + 1])
  std::vector<Position> zero_pos, act_pos, fill_pos;

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

  static bool has_transform(const int64_t* s) { return s[cType] == kConv && (s[cMode] != kSingle || s[cTransform] != kNone); }
  int64_t cin_of(const int64_t* s) const { return s[cType] == kConv ? s[cCinEff] : nodes[s[cIn0]].c; }

  // The input position tap (ki, kj) of output (i, j) reads, or false if it reads zeros.
  static bool tap_source(const int64_t* s, const Node<T>& in, int64_t i, int64_t j, int64_t ki, int64_t kj, int64_t& y, int64_t& x) {
    if (s[cType] == kConv) {
      const int64_t si = i - (s[cShift] == kShiftDown), sj = j - (s[cShift] == kShiftRight);
      y = si * s[cStride] - s[cPadTop] + ki;
      x = sj * s[cStride] - s[cPadLeft] + kj;
      return y >= 0 && y < in.h && x >= 0 && x < in.w;
    }
    // transposed: output (i, j) is the uncropped output (i, j + pad_left); input (yy, xx) / stride
    const int64_t yy = i - ki, xx = j + s[cPadLeft] - kj, stride = s[cStride];
    if (yy < 0 || xx < 0 || yy % stride != 0 || xx % stride != 0) return false;
    y = yy / stride;
    x = xx / stride;
    return y < in.h && x < in.w;
  }

  // ---- the plan: a dry run over the schedule --------------------------------------------
  // Returns, per node, the rows of it that must stay resident (read rows vs. rows written so far),
  // and shrinks each window to the rows of it live at once (its data is allocated afterwards).
  std::vector<int64_t> build_plan(int64_t steps) {
    const int64_t n_ops = static_cast<int64_t>(spec.size());
    std::vector<int64_t> written(nodes.size(), -1), needed(nodes.size(), 1);
    std::vector<std::vector<int64_t>> row_of(n_ops);  // per windowed op: which row each (slot, column) holds
    for (int64_t op = 0; op < n_ops; ++op)
      if (windows[op].rows) row_of[op].assign(static_cast<size_t>(windows[op].rows * windows[op].w), -1);
    auto read = [&](int64_t node, int64_t row) { needed[node] = std::max(needed[node], written[node] - row + 1); };
    // the same count for each window: rows from the lowest read to the highest filled so far
    std::vector<int64_t> filled(static_cast<size_t>(n_ops), -1);
    std::vector<int64_t> window_rows(static_cast<size_t>(n_ops), 1);
    step_begin.assign(1, 0);
    for (int64_t t = 0; t < steps; ++t) {
      for (int64_t op = 0; op < n_ops; ++op) {
        const int64_t begin = offsets[op][t], end = offsets[op][t + 1];
        if (begin == end) continue;
        const int64_t* s = spec[op];
        const Node<T>& out = nodes[s[cOut]];
        OpStep w{static_cast<int32_t>(op), 0, 0, 0, 0, 0, 0, false};
        w.zero0 = w.zero1 = static_cast<int64_t>(zero_pos.size());
        w.act0 = static_cast<int64_t>(act_pos.size());
        w.fill0 = w.fill1 = static_cast<int64_t>(fill_pos.size());
        int64_t lo = INT64_MAX, hi = -1, out_row = -1;
        for (int64_t p = begin; p < end; ++p) {
          const int32_t i = positions[op][p] / static_cast<int32_t>(out.w), j = positions[op][p] % static_cast<int32_t>(out.w);
          out_row = std::max<int64_t>(out_row, i);
          if (s[cType] == kConv && ((s[cShift] == kShiftDown && i == 0) || (s[cShift] == kShiftRight && j == 0))) {
            zero_pos.push_back({i, j});
            continue;
          }
          act_pos.push_back({i, j});
          lo = std::min<int64_t>(lo, i);
          hi = std::max<int64_t>(hi, i);
        }
        w.zero1 = static_cast<int64_t>(zero_pos.size());
        w.act1 = static_cast<int64_t>(act_pos.size());
        if (s[cType] == kAdd || s[cType] == kGated) {
          for (int64_t a = w.act0; a < w.act1; ++a) {
            read(s[cIn0], act_pos[a][0]);
            read(s[cIn1], act_pos[a][0]);
          }
        } else {
          const Node<T>& in = nodes[s[cIn0]];
          Window<T>& win = windows[op];
          w.windowed = win.rows > 0 && hi >= lo && (hi - lo) * s[cStride] + s[cKh] <= win.rows;
          int64_t lowest_read = INT64_MAX;
          for (int64_t a = w.act0; a < w.act1; ++a) {
            for (int64_t ki = 0; ki < s[cKh]; ++ki) {
              for (int64_t kj = 0; kj < s[cKw]; ++kj) {
                int64_t y, x;
                if (!tap_source(s, in, act_pos[a][0], act_pos[a][1], ki, kj, y, x)) continue;
                read(s[cIn0], y);
                if (s[cMode] != kSingle) read(s[cIn1], y);
                if (!w.windowed) continue;
                lowest_read = std::min(lowest_read, y);
                int64_t& held_row = row_of[op][(y % win.rows) * win.w + x];
                if (held_row == y) continue;
                held_row = y;
                filled[op] = std::max(filled[op], y);
                fill_pos.push_back({static_cast<int32_t>(y), static_cast<int32_t>(x)});
              }
            }
          }
          w.fill1 = static_cast<int64_t>(fill_pos.size());
          if (lowest_read != INT64_MAX) window_rows[op] = std::max(window_rows[op], filled[op] - lowest_read + 1);
          if (has_transform(s) && !w.windowed) gathered_size = std::max(gathered_size, (w.act1 - w.act0) * batch * s[cKh] * s[cKw] * cin_of(s));
        }
        written[s[cOut]] = std::max(written[s[cOut]], out_row);  // after its reads: an op never reads its own output
        work.push_back(w);
      }
      step_begin.push_back(static_cast<int64_t>(work.size()));
    }
    // Planned with kh + 2·stride rows per window; keeping only those live at once leaves the plan
    // valid: every live row still has its own slot (y mod rows), and no slot is refilled early.
    for (int64_t op = 0; op < n_ops; ++op)
      if (windows[op].rows) windows[op].rows = std::min(windows[op].rows, window_rows[op]);
    return needed;
  }

  // ---- one op at one step, run by every thread of the team --------------------------------
  void elementwise(const OpStep& w, int tid) {
    const int64_t* s = spec[w.op];
    const auto [q0, q1] = share((w.act1 - w.act0) * batch, tid, team);
    for (int64_t q = q0; q < q1; ++q) {
      const Position& p = act_pos[w.act0 + q / batch];
      const int64_t b = q % batch;
      const Node<T>& out = nodes[s[cOut]];
      const T* pa = nodes[s[cIn0]].at(b, p[0], p[1]);
      const T* pb = nodes[s[cIn1]].at(b, p[0], p[1]);
      T* po = out.at(b, p[0], p[1]);
      const int64_t f = out.c;
      if (s[cType] == kAdd) {
        for (int64_t k = 0; k < f; ++k) po[k] = pa[k] + pb[k];
        continue;
      }
      // gated: out = x + (γa·a + βa)·σ(γb·b + βb), h = [a | b] (pa = x, pb = h)
      const T* g = gamma[w.op] ? gamma[w.op] + b * 2 * f : nullptr;
      const T* be = beta[w.op] ? beta[w.op] + b * 2 * f : nullptr;
      for (int64_t k = 0; k < f; ++k) {
        T a = pb[k], gate_in = pb[f + k];
        if (g) { a *= g[k]; gate_in *= g[f + k]; }
        if (be) { a += be[k]; gate_in += be[f + k]; }
        po[k] = pa[k] + a / (T(1) + std::exp(-gate_in));
      }
    }
  }

  struct Scratch {  // one per thread, allocated before the team starts
    std::vector<T> cols;         // rows gathered with their transform (not windowed)
    std::vector<const T*> taps;  // R x kMaxTaps tap pointers (nullptr: zeros)
    std::vector<const T*> a;     // R x used taps, zeros substituted
    std::vector<T*> c;           // R output rows
    std::vector<int> tap_ids;
    Scratch(int rows, int64_t cols_size)
        : cols(static_cast<size_t>(cols_size)), taps(static_cast<size_t>(rows * kMaxTaps)), a(static_cast<size_t>(rows * kMaxTaps)),
          c(static_cast<size_t>(rows)) {
      tap_ids.reserve(kMaxTaps);
    }
  };
  int64_t gathered_size = 0;  // the largest rows x K gathered in one (op, step): each thread's cols

  void matrix(const OpStep& w, int tid, Barrier& barrier, Scratch& sc) {
    const int64_t* s = spec[w.op];
    const Node<T>& out = nodes[s[cOut]];
    const Node<T>& in = nodes[s[cIn0]];
    Window<T>& win = windows[w.op];
    const int64_t n = out.c;
    {  // shifted-in zero rows/columns and window fills, split over (position, image)
      const auto [z0, z1] = share((w.zero1 - w.zero0) * batch, tid, team);
      for (int64_t q = z0; q < z1; ++q) {
        const Position& p = zero_pos[w.zero0 + q / batch];
        std::fill_n(out.at(q % batch, p[0], p[1]), n, T(0));
      }
      const auto [f0, f1] = share((w.fill1 - w.fill0) * batch, tid, team);
      for (int64_t q = f0; q < f1; ++q) {
        const Position& p = fill_pos[w.fill0 + q / batch];
        gather(s, q % batch, p[0], p[1], win.at(q % batch, p[0], p[1]));
      }
      if (w.fill1 > w.fill0) barrier.wait();  // every thread's rows read every filled position
    }
    const int64_t m = (w.act1 - w.act0) * batch;
    if (m == 0) return;
    const int64_t cin = cin_of(s), kh = s[cKh], kw = s[cKw], n_taps = kh * kw, lanes = tiles.lanes;
    const int64_t vecs = ldw[w.op] / lanes, tiles_m = (m + tiles.rows - 1) / tiles.rows;
    const bool gathered = has_transform(s) && !w.windowed;  // each thread gathers its own rows: split rows
    const bool big_weights = n_taps * cin * ldw[w.op] * static_cast<int64_t>(sizeof(T)) > (int64_t(1) << 19);
    const bool split_rows = gathered || (tiles_m >= team && (!big_weights || tiles_m >= 4 * team));
    int64_t t0 = 0, t1 = tiles_m, v0 = 0, v1 = vecs;
    if (split_rows) {
      std::tie(t0, t1) = share(tiles_m, tid, team);
    } else {
      std::tie(v0, v1) = share(vecs, tid, team);
    }
    if (t0 >= t1 || v0 >= v1) return;
    const int64_t r_begin = t0 * tiles.rows, r_end = std::min(m, t1 * tiles.rows);
    if (gathered) {  // im2col with the transform, for this thread's rows only
      const int64_t k = n_taps * cin;
      // sc.cols holds gathered_size values: at least this (op, step)'s rows x K (build_plan)
      for (int64_t r = r_begin; r < r_end; ++r) {
        const Position& p = act_pos[w.act0 + r / batch];
        for (int64_t ki = 0; ki < kh; ++ki)
          for (int64_t kj = 0; kj < kw; ++kj) {
            int64_t y, x;
            T* dst = sc.cols.data() + (r - r_begin) * k + (ki * kw + kj) * cin;
            if (tap_source(s, in, p[0], p[1], ki, kj, y, x)) {
              gather(s, r % batch, y, x, dst);
            } else {
              std::fill_n(dst, cin, T(0));
            }
          }
      }
    }
    const T* src = w.windowed ? win.data.data() : in.data;
    const int64_t src_stride = w.windowed ? win.image_stride() : in.image_stride();
    for (int64_t r0 = r_begin; r0 < r_end; r0 += tiles.rows) {
      const int rt = static_cast<int>(std::min<int64_t>(tiles.rows, r_end - r0));
      // tap pointers of the tile's rows; the taps read by any row of the tile
      bool used[kMaxTaps] = {};
      int64_t last = -1, tap_off[kMaxTaps];
      bool tap_ok[kMaxTaps];
      for (int r = 0; r < rt; ++r) {
        const int64_t row = r0 + r, b = row % batch, pos = w.act0 + row / batch;
        const Position& p = act_pos[pos];
        if (pos != last) {
          last = pos;
          for (int64_t ki = 0; ki < kh; ++ki)
            for (int64_t kj = 0; kj < kw; ++kj) {
              int64_t y, x;
              const int64_t tap = ki * kw + kj;
              tap_ok[tap] = tap_source(s, in, p[0], p[1], ki, kj, y, x);
              if (tap_ok[tap]) tap_off[tap] = gathered ? 0 : (w.windowed ? win.offset(y, x) : in.offset(y, x));
            }
        }
        for (int64_t tap = 0; tap < n_taps; ++tap) {
          const T* ptr = nullptr;
          if (tap_ok[tap]) ptr = gathered ? sc.cols.data() + (row - r_begin) * n_taps * cin + tap * cin : src + b * src_stride + tap_off[tap];
          sc.taps[r * kMaxTaps + tap] = ptr;
          used[tap] = used[tap] || tap_ok[tap];
        }
        sc.c[r] = out.at(b, p[0], p[1]);
      }
      sc.tap_ids.clear();
      for (int64_t tap = 0; tap < n_taps; ++tap)
        if (used[tap]) sc.tap_ids.push_back(static_cast<int>(tap));
      const int n_used = static_cast<int>(sc.tap_ids.size());
      for (int r = 0; r < rt; ++r)
        for (int u = 0; u < n_used; ++u) {
          const T* ptr = sc.taps[r * kMaxTaps + sc.tap_ids[u]];
          sc.a[r * n_used + u] = ptr ? ptr : zeros.data();
        }
      T* c_rows[16];
      for (int64_t v = v0; v < v1; v += tiles.vecs) {
        const int vt = static_cast<int>(std::min<int64_t>(tiles.vecs, v1 - v));
        const int64_t col = v * lanes;
        for (int r = 0; r < rt; ++r) c_rows[r] = sc.c[r] + col;
        tiles.get(rt, vt)(n_used, sc.tap_ids.data(), static_cast<int>(cin), sc.a.data(), weight[w.op] + col, static_cast<long>(ldw[w.op]),
                          bias[w.op] + col, c_rows, static_cast<int>(std::min<int64_t>(n - col, vt * lanes)));
      }
    }
  }

  // ---- the whole loop, on thread tid of the team -------------------------------------------
  void run(int tid, Barrier& barrier, Scratch& sc, int64_t input_node, int64_t params_node, int64_t height, int64_t width, int64_t channels, int64_t bits,
           double temperature, const double* noise, int64_t first_sampled) {
    std::vector<double> value(static_cast<size_t>(channels));
    const int64_t n_out = nodes[params_node].c;
    for (int64_t t = 0; t < height * width; ++t) {
      for (int64_t k = step_begin[t]; k < step_begin[t + 1]; ++k) {
        const OpStep& w = work[k];
        const int64_t type = spec[w.op][cType];
        if (type == kConv || type == kDeconv) {
          matrix(w, tid, barrier, sc);
        } else {
          elementwise(w, tid);
        }
        barrier.wait();  // the next op may read this one's output
      }
      if (t < first_sampled) continue;  // a given pixel (completion): already in the input cache
      const int64_t i = t / width, j = t % width;
      const auto [b0, b1] = share(batch, tid, team);
      for (int64_t b = b0; b < b1; ++b) {
        cpixelcnn::sample_one(nodes[params_node].at(b, i, j), n_out, noise + ((b * height + i) * width + j) * (1 + channels), channels, bits,
                              temperature, value.data());
        T* x = nodes[input_node].at(b, i, j);
        for (int64_t c = 0; c < channels; ++c) x[c] = static_cast<T>(value[c]);
      }
      barrier.wait();
    }
  }
};

// in.nodes: one NHWC tensor (B, H, W, C) per node, the input node pre-filled (image zeros, ones
// channel set inside the image); a node given with zero rows, (B, 0, W, C), is held by the
// engine (a ring of as few rows as the schedule needs) — in.node_heights[k] is every node's full height.
// Returns nothing: the input node holds the samples afterwards.
void cached_sample(const SamplerInputs& in) {
  check_sampler_inputs(in, c10::kCPU);
  const auto& nodes = in.nodes;
  const auto& heights = in.node_heights;
  const auto& op_spec = in.op_spec;
  const auto& weights = in.weights;
  const int64_t input_node = in.input_node, params_node = in.params_node, height = in.height, width = in.width;
  for (size_t k = 0; k < nodes.size(); ++k)
    TORCH_CHECK(heights[k] > 0 && (nodes[k].size(1) == heights[k] || (nodes[k].size(1) == 0 && static_cast<int64_t>(k) != input_node &&
                                                                     static_cast<int64_t>(k) != params_node)),
                "node ", k, " must have its full height ", heights[k], " (or 0 rows: held by the engine; not the input or params node)");
  const int64_t n_ops = op_spec.size(0);
  for (int64_t op = 0; op < n_ops; ++op) {
    const int64_t* s = op_spec.data_ptr<int64_t>() + op * cCols;
    TORCH_CHECK(s[cType] > kDeconv || s[cKh] * s[cKw] <= kMaxTaps, "op ", op, ": more than ", kMaxTaps, " taps");
  }
  const int64_t batch = nodes[0].size(0);
  AT_DISPATCH_FLOATING_TYPES(nodes[0].scalar_type(), "cached_sample", [&] {
    using T = scalar_t;
    Runner<T> r;
    r.batch = batch;
    r.tiles = tiles_for_cpu<T>();
    size_t max_cin = 1;
    for (size_t k = 0; k < nodes.size(); ++k)
      r.nodes.push_back({nodes[k].data_ptr<T>(), nodes[k].size(3), heights[k], nodes[k].size(2), std::max<int64_t>(nodes[k].size(1), 1)});
    r.padded.resize(static_cast<size_t>(2 * n_ops));
    for (int64_t op = 0; op < n_ops; ++op) {
      const int64_t* s = op_spec.data_ptr<int64_t>() + op * cCols;
      r.spec.push_back(s);
      r.gamma.push_back(data_or_null<T>(in.gammas[op]));
      r.beta.push_back(data_or_null<T>(in.betas[op]));
      r.positions.push_back(in.positions[op].data_ptr<int32_t>());
      r.offsets.push_back(in.offsets[op].data_ptr<int64_t>());
      Window<T> win;
      const T* w = data_or_null<T>(weights[op]);
      const T* b = data_or_null<T>(in.biases[op]);
      int64_t ld = 0;
      if (s[cType] == kConv || s[cType] == kDeconv) {  // columns padded to whole vectors (zeros)
        const int64_t n = r.nodes[s[cOut]].c, k = weights[op].numel() / n;
        ld = (n + r.tiles.lanes - 1) / r.tiles.lanes * r.tiles.lanes;
        if (ld != n) {
          auto& pw = r.padded[2 * op];
          pw.assign(static_cast<size_t>(k * ld), T(0));
          for (int64_t row = 0; row < k; ++row) std::copy_n(w + row * n, n, pw.data() + row * ld);
          w = pw.data();
        }
        auto& pb = r.padded[2 * op + 1];
        pb.assign(static_cast<size_t>(ld), T(0));
        std::copy_n(b, n, pb.data());
        b = pb.data();
        max_cin = std::max<size_t>(max_cin, static_cast<size_t>(r.cin_of(s)));
      }
      r.weight.push_back(w);
      r.bias.push_back(b);
      r.ldw.push_back(ld);
      if (Runner<T>::has_transform(s)) {  // a transform worth computing once per position
        win.rows = s[cKh] + 2 * s[cStride];
        win.w = r.nodes[s[cIn0]].w;
        win.c = s[cCinEff];
      }
      r.windows.push_back(std::move(win));
    }
    r.zeros.assign(max_cin, T(0));
    const std::vector<int64_t> needed = r.build_plan(height * width);
    for (Window<T>& win : r.windows) win.data.resize(static_cast<size_t>(batch * win.rows * win.w * win.c));
    r.held.resize(nodes.size());
    for (size_t k = 0; k < nodes.size(); ++k) {
      if (nodes[k].size(1) != 0) continue;
      Node<T>& node = r.nodes[k];
      node.rows = std::min(node.h, needed[k]);
      r.held[k].assign(static_cast<size_t>(batch * node.rows * node.w * node.c), T(0));
      node.data = r.held[k].data();
    }
    const int wanted = team_size();
    std::vector<typename Runner<T>::Scratch> scratch;
    for (int tid = 0; tid < wanted; ++tid) scratch.emplace_back(r.tiles.rows, r.gathered_size);
    const double* noise_data = in.noise.data_ptr<double>();
    Barrier barrier;
    std::atomic<bool> start{false};
    auto body = [&](int tid) { r.run(tid, barrier, scratch[tid], input_node, params_node, height, width, in.channels, in.bits, in.temperature, noise_data, in.first_sampled); };
    std::vector<std::thread> helpers;
    try {
      for (int tid = 1; tid < wanted; ++tid)
        helpers.emplace_back([&, tid] {
          while (!start.load(std::memory_order_acquire)) std::this_thread::yield();
          body(tid);
        });
    } catch (const std::system_error&) {  // no more threads to be had: the team is those that started
    }
    r.team = 1 + static_cast<int>(helpers.size());
    barrier.set_size(r.team);
    start.store(true, std::memory_order_release);
    body(0);
    for (auto& h : helpers) h.join();
  });
}

std::string cached_sampler_isa() { return sampler_isa(); }

}  // namespace

void register_cached_sampler(pybind11::module& m) {
  m.def("cached_sample", &cached_sample, "Cached incremental PixelCNN++ sampling over a lowered op list (CPU)");
  m.def("cached_sampler_isa", &cached_sampler_isa, "The instruction set of the CPU cached sampler's tile kernels (avx512, avx2, baseline)");
}
