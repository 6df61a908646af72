// Cached incremental PixelCNN++ sampling on the CPU: every activation is computed once.
//
// The model arrives lowered to a flat list of ops over activation caches ("nodes", NHWC per
// image), with a per-op schedule: for generation step t, the output positions that become
// computable once pixels < t are final (built and checked in cpixelcnn/sampling/cached_sampler.py). At step t
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

#include "registry.h"
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
using Op = StepOp<T>;  // one op of the plan: its desc (type, mode, transform, kernel), nodes, parameters, schedule

// The CPU engine: the plan every engine consumes (make_plan), plus what only the CPU loop keeps —
// weights with whole-vector columns, the nodes it holds as rings, each op's input window — and
// the schedule its dry run lays out.
template <typename T>
struct Runner {
  const Plan<T>* plan = nullptr;
  int64_t batch = 0;
  int team = 1;
  Tiles<T> tiles;
  std::vector<Node<T>> nodes;
  std::vector<std::vector<T>> held;  // ring storage of the nodes the engine holds
  std::vector<const T*> weight, bias;  // weight: (taps·cin, ldw), bias: ldw (zero-padded columns)
  std::vector<int64_t> ldw;
  std::vector<std::vector<T>> padded;  // owns padded copies where C_out is not a whole number of vectors
  std::vector<Window<T>> windows;      // per op
  std::vector<T> zeros;                // cin_eff zeros: the input of taps outside the map

  // the schedule
  std::vector<OpStep> work;         // in execution order
  std::vector<int64_t> step_begin;  // work of step t: [step_begin[t], step_begin[t + 1])
  std::vector<Position> zero_pos, act_pos, fill_pos;
  int64_t gathered_size = 0;  // the largest rows x K gathered in one (op, step): each thread's cols

  const Op<T>& op_at(int64_t op) const { return plan->ops[static_cast<size_t>(op)]; }

  // v <- transform(inputs at (b, y, x)); returns its length
  int64_t gather(const Op<T>& o, int64_t b, int64_t y, int64_t x, T* v) const {
    const Node<T>& a = nodes[o.in0];
    const T* pa = a.at(b, y, x);
    int64_t n = a.c;
    if (o.desc.mode == kConcat) {
      const Node<T>& bn = nodes[o.in1];
      const T* pb = bn.at(b, y, x);
      for (int64_t k = 0; k < a.c; ++k) v[k] = pa[k];
      for (int64_t k = 0; k < bn.c; ++k) v[a.c + k] = pb[k];
      n = a.c + bn.c;
    } else if (o.desc.mode == kSum) {
      const T* pb = nodes[o.in1].at(b, y, x);
      for (int64_t k = 0; k < n; ++k) v[k] = pa[k] + pb[k];
    } else {
      for (int64_t k = 0; k < n; ++k) v[k] = pa[k];
    }
    if (o.desc.transform == kElu) {
      elu_any(v, static_cast<T*>(nullptr), n);
    } else if (o.desc.transform == kConcatElu) {  // [elu(v), elu(-v)]
      elu_any(v, v + n, n);
      n *= 2;
    }
    return n;
  }

  static bool has_transform(const OpDesc& d) { return d.type == kConv && (d.mode != kSingle || d.transform != kNone); }
  int64_t cin_of(const Op<T>& o) const { return o.desc.type == kConv ? o.desc.cin_eff : nodes[o.in0].c; }

  // The input position tap (ki, kj) of output (i, j) reads, or false if it reads zeros.
  static bool tap_source(const OpDesc& d, const Node<T>& in, int64_t i, int64_t j, int64_t ki, int64_t kj, int64_t& y, int64_t& x) {
    if (d.type == kConv) {
      const int64_t si = i - (d.shift == kShiftDown), sj = j - (d.shift == kShiftRight);
      y = si * d.stride - d.pad_top + ki;
      x = sj * d.stride - d.pad_left + kj;
      return y >= 0 && y < in.h && x >= 0 && x < in.w;
    }
    // transposed: output (i, j) is the uncropped output (i, j + pad_left); input (yy, xx) / stride
    const int64_t yy = i - ki, xx = j + d.pad_left - kj, stride = d.stride;
    if (yy < 0 || xx < 0 || yy % stride != 0 || xx % stride != 0) return false;
    y = yy / stride;
    x = xx / stride;
    return y < in.h && x < in.w;
  }

  // ---- the schedule: a dry run over the steps ---------------------------------------------
  // What the dry run tracks: per node the rows written so far and the most rows ever read behind
  // them; per windowed op which input row each slot holds, the highest row filled, and the rows live at once.
  struct DryRun {
    std::vector<int64_t> written, needed;
    std::vector<std::vector<int64_t>> row_of;
    std::vector<int64_t> filled, window_rows;
    void read(int64_t node, int64_t row) { needed[node] = std::max(needed[node], written[node] - row + 1); }
  };

  // Lays out every step's work. Returns, per node, the rows of it that must stay resident, and
  // shrinks each window to the rows of it live at once (its data is allocated afterwards).
  std::vector<int64_t> build_schedule(int64_t steps) {
    const int64_t n_ops = static_cast<int64_t>(plan->ops.size());
    DryRun dry{std::vector<int64_t>(nodes.size(), -1), std::vector<int64_t>(nodes.size(), 1), std::vector<std::vector<int64_t>>(n_ops),
               std::vector<int64_t>(n_ops, -1), std::vector<int64_t>(n_ops, 1)};
    for (int64_t op = 0; op < n_ops; ++op)
      if (windows[op].rows) dry.row_of[op].assign(static_cast<size_t>(windows[op].rows * windows[op].w), -1);
    step_begin.assign(1, 0);
    for (int64_t t = 0; t < steps; ++t) {
      for (int64_t op = 0; op < n_ops; ++op)
        if (op_at(op).offsets[t] != op_at(op).offsets[t + 1]) schedule_op(op, t, dry);
      step_begin.push_back(static_cast<int64_t>(work.size()));
    }
    // Planned with kh + 2·stride rows per window; keeping only those live at once leaves the
    // schedule valid: every live row still has its own slot (y mod rows), and no slot is refilled early.
    for (int64_t op = 0; op < n_ops; ++op)
      if (windows[op].rows) windows[op].rows = std::min(windows[op].rows, dry.window_rows[op]);
    return dry.needed;
  }

  // The work of op at step t: its zero, computed and window-fill positions, and the rows it reads.
  void schedule_op(int64_t op, int64_t t, DryRun& dry) {
    const Op<T>& o = op_at(op);
    const OpDesc& d = o.desc;
    const Node<T>& out = nodes[o.out];
    OpStep w{static_cast<int32_t>(op), 0, 0, 0, 0, 0, 0, false};
    w.zero0 = static_cast<int64_t>(zero_pos.size());
    w.act0 = static_cast<int64_t>(act_pos.size());
    w.fill0 = w.fill1 = static_cast<int64_t>(fill_pos.size());
    int64_t lo = INT64_MAX, hi = -1, out_row = -1;
    for (int64_t p = o.offsets[t]; p < o.offsets[t + 1]; ++p) {
      const int32_t i = o.positions[p] / static_cast<int32_t>(out.w), j = o.positions[p] % static_cast<int32_t>(out.w);
      out_row = std::max<int64_t>(out_row, i);
      if (d.type == kConv && ((d.shift == kShiftDown && i == 0) || (d.shift == kShiftRight && j == 0))) {
        zero_pos.push_back({i, j});
        continue;
      }
      act_pos.push_back({i, j});
      lo = std::min<int64_t>(lo, i);
      hi = std::max<int64_t>(hi, i);
    }
    w.zero1 = static_cast<int64_t>(zero_pos.size());
    w.act1 = static_cast<int64_t>(act_pos.size());
    if (d.type == kAdd || d.type == kGated) {
      for (int64_t a = w.act0; a < w.act1; ++a) {
        dry.read(o.in0, act_pos[a][0]);
        dry.read(o.in1, act_pos[a][0]);
      }
    } else {
      w.windowed = windows[op].rows > 0 && hi >= lo && (hi - lo) * d.stride + d.kh <= windows[op].rows;
      schedule_taps(op, w, dry);
      if (has_transform(d) && !w.windowed) gathered_size = std::max(gathered_size, (w.act1 - w.act0) * batch * d.kh * d.kw * cin_of(o));
    }
    dry.written[o.out] = std::max(dry.written[o.out], out_row);  // after its reads: an op never reads its own output
    work.push_back(w);
  }

  // A convolution's reads at one step, and the window rows it must fill first.
  void schedule_taps(int64_t op, OpStep& w, DryRun& dry) {
    const Op<T>& o = op_at(op);
    const Node<T>& in = nodes[o.in0];
    const Window<T>& win = windows[op];
    int64_t lowest_read = INT64_MAX;
    for (int64_t a = w.act0; a < w.act1; ++a) {
      for (int64_t ki = 0; ki < o.desc.kh; ++ki) {
        for (int64_t kj = 0; kj < o.desc.kw; ++kj) {
          int64_t y, x;
          if (!tap_source(o.desc, in, act_pos[a][0], act_pos[a][1], ki, kj, y, x)) continue;
          dry.read(o.in0, y);
          if (o.desc.mode != kSingle) dry.read(o.in1, y);
          if (!w.windowed) continue;
          lowest_read = std::min(lowest_read, y);
          int64_t& held_row = dry.row_of[op][(y % win.rows) * win.w + x];
          if (held_row == y) continue;
          held_row = y;
          dry.filled[op] = std::max(dry.filled[op], y);
          fill_pos.push_back({static_cast<int32_t>(y), static_cast<int32_t>(x)});
        }
      }
    }
    w.fill1 = static_cast<int64_t>(fill_pos.size());
    if (lowest_read != INT64_MAX) dry.window_rows[op] = std::max(dry.window_rows[op], dry.filled[op] - lowest_read + 1);
  }

  // ---- one op at one step, run by every thread of the team --------------------------------
  void elementwise(const OpStep& w, int tid) {
    const Op<T>& o = op_at(w.op);
    const auto [q0, q1] = share((w.act1 - w.act0) * batch, tid, team);
    for (int64_t q = q0; q < q1; ++q) {
      const Position& p = act_pos[w.act0 + q / batch];
      const int64_t b = q % batch;
      const Node<T>& out = nodes[o.out];
      const T* pa = nodes[o.in0].at(b, p[0], p[1]);
      const T* pb = nodes[o.in1].at(b, p[0], p[1]);
      T* po = out.at(b, p[0], p[1]);
      const int64_t f = out.c;
      if (o.desc.type == kAdd) {
        for (int64_t k = 0; k < f; ++k) po[k] = pa[k] + pb[k];
        continue;
      }
      // gated: out = x + (γa·a + βa)·σ(γb·b + βb), h = [a | b] (pa = x, pb = h)
      const T* g = o.gamma ? o.gamma + b * 2 * f : nullptr;
      const T* be = o.beta ? o.beta + b * 2 * f : nullptr;
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

  // The shifted-in zero rows/columns and the window fills of a convolution at one step, split
  // over (position, image); every thread's rows may read every filled position, hence the barrier.
  void zero_and_fill(const OpStep& w, int tid, Barrier& barrier) {
    const Op<T>& o = op_at(w.op);
    const Node<T>& out = nodes[o.out];
    Window<T>& win = windows[w.op];
    const auto [z0, z1] = share((w.zero1 - w.zero0) * batch, tid, team);
    for (int64_t q = z0; q < z1; ++q) {
      const Position& p = zero_pos[w.zero0 + q / batch];
      std::fill_n(out.at(q % batch, p[0], p[1]), out.c, T(0));
    }
    const auto [f0, f1] = share((w.fill1 - w.fill0) * batch, tid, team);
    for (int64_t q = f0; q < f1; ++q) {
      const Position& p = fill_pos[w.fill0 + q / batch];
      gather(o, q % batch, p[0], p[1], win.at(q % batch, p[0], p[1]));
    }
    if (w.fill1 > w.fill0) barrier.wait();
  }

  // im2col with the transform, for rows [r_begin, r_end) of the (op, step) only: sc.cols holds
  // gathered_size values, at least this (op, step)'s rows x K (build_schedule).
  void gather_rows(const OpStep& w, int64_t r_begin, int64_t r_end, Scratch& sc) const {
    const Op<T>& o = op_at(w.op);
    const Node<T>& in = nodes[o.in0];
    const int64_t cin = cin_of(o), kh = o.desc.kh, kw = o.desc.kw, k = kh * kw * cin;
    for (int64_t r = r_begin; r < r_end; ++r) {
      const Position& p = act_pos[w.act0 + r / batch];
      for (int64_t ki = 0; ki < kh; ++ki)
        for (int64_t kj = 0; kj < kw; ++kj) {
          int64_t y, x;
          T* dst = sc.cols.data() + (r - r_begin) * k + (ki * kw + kj) * cin;
          if (tap_source(o.desc, in, p[0], p[1], ki, kj, y, x)) {
            gather(o, r % batch, y, x, dst);
          } else {
            std::fill_n(dst, cin, T(0));
          }
        }
    }
  }

  // Each row of the tile [r0, r0 + rt): its tap pointers (sc.a, zeros substituted, only the taps
  // some row reads, listed in sc.tap_ids) and its output row (sc.c). Returns the number of taps used.
  int tile_taps(const OpStep& w, int64_t r0, int rt, int64_t r_begin, bool gathered, Scratch& sc) {
    const Op<T>& o = op_at(w.op);
    const Node<T>& in = nodes[o.in0];
    const Node<T>& out = nodes[o.out];
    Window<T>& win = windows[w.op];
    const int64_t cin = cin_of(o), kh = o.desc.kh, kw = o.desc.kw, n_taps = kh * kw;
    const T* src = w.windowed ? win.data.data() : in.data;
    const int64_t src_stride = w.windowed ? win.image_stride() : in.image_stride();
    bool used[kMaxTaps] = {}, tap_ok[kMaxTaps];
    int64_t last = -1, tap_off[kMaxTaps];
    for (int r = 0; r < rt; ++r) {
      const int64_t row = r0 + r, b = row % batch, pos = w.act0 + row / batch;
      const Position& p = act_pos[pos];
      if (pos != last) {
        last = pos;
        for (int64_t tap = 0; tap < n_taps; ++tap) {
          int64_t y, x;
          tap_ok[tap] = tap_source(o.desc, in, p[0], p[1], tap / kw, tap % kw, y, x);
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
    return n_used;
  }

  // A convolution at one step: one matrix product (rows: (position, image); columns: output
  // channels) in the tile kernels, split over row tiles, or over columns when the weights are large.
  void matrix(const OpStep& w, int tid, Barrier& barrier, Scratch& sc) {
    const Op<T>& o = op_at(w.op);
    zero_and_fill(w, tid, barrier);
    const int64_t m = (w.act1 - w.act0) * batch;
    if (m == 0) return;
    const int64_t n = nodes[o.out].c, cin = cin_of(o), n_taps = o.desc.kh * o.desc.kw, lanes = tiles.lanes;
    const int64_t vecs = ldw[w.op] / lanes, tiles_m = (m + tiles.rows - 1) / tiles.rows;
    const bool gathered = has_transform(o.desc) && !w.windowed;  // each thread gathers its own rows: split rows
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
    if (gathered) gather_rows(w, r_begin, r_end, sc);
    for (int64_t r0 = r_begin; r0 < r_end; r0 += tiles.rows) {
      const int rt = static_cast<int>(std::min<int64_t>(tiles.rows, r_end - r0));
      const int n_used = tile_taps(w, r0, rt, r_begin, gathered, sc);
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
  void run(int tid, Barrier& barrier, Scratch& sc) {
    const Plan<T>& pl = *plan;
    std::vector<double> value(static_cast<size_t>(pl.channels));
    const int64_t n_out = nodes[pl.params_node].c;
    for (int64_t t = 0; t < int64_t(pl.height) * pl.width; ++t) {
      for (int64_t k = step_begin[t]; k < step_begin[t + 1]; ++k) {
        const OpStep& w = work[k];
        const int type = op_at(w.op).desc.type;
        if (type == kConv || type == kDeconv) {
          matrix(w, tid, barrier, sc);
        } else {
          elementwise(w, tid);
        }
        barrier.wait();  // the next op may read this one's output
      }
      if (t < pl.first_sampled) continue;  // a given pixel (completion): already in the input cache
      const int64_t i = t / pl.width, j = t % pl.width;
      const auto [b0, b1] = share(batch, tid, team);
      for (int64_t b = b0; b < b1; ++b) {
        cpixelcnn::sample_one(nodes[pl.params_node].at(b, i, j), n_out, pl.noise + ((b * pl.height + i) * pl.width + j) * (1 + pl.channels), pl.channels,
                              pl.bits, pl.temperature, value.data());
        T* x = nodes[pl.input_node].at(b, i, j);
        for (int64_t c = 0; c < pl.channels; ++c) x[c] = static_cast<T>(value[c]);
      }
      barrier.wait();
    }
  }

  // ---- set-up from the plan ----------------------------------------------------------------
  // Weights with columns padded to whole vectors (zeros), and each transformed convolution's window.
  void prepare_ops() {
    const int64_t n_ops = static_cast<int64_t>(plan->ops.size());
    padded.resize(static_cast<size_t>(2 * n_ops));
    size_t max_cin = 1;
    for (int64_t op = 0; op < n_ops; ++op) {
      const Op<T>& o = op_at(op);
      const T* w = o.weight;
      const T* b = o.bias;
      int64_t ld = 0;
      if (o.desc.type == kConv || o.desc.type == kDeconv) {
        const int64_t n = nodes[o.out].c, k = int64_t(o.desc.kh) * o.desc.kw * cin_of(o);
        ld = (n + tiles.lanes - 1) / tiles.lanes * tiles.lanes;
        if (ld != n) {
          auto& pw = padded[2 * op];
          pw.assign(static_cast<size_t>(k * ld), T(0));
          for (int64_t row = 0; row < k; ++row) std::copy_n(w + row * n, n, pw.data() + row * ld);
          w = pw.data();
        }
        auto& pb = padded[2 * op + 1];
        pb.assign(static_cast<size_t>(ld), T(0));
        std::copy_n(b, n, pb.data());
        b = pb.data();
        max_cin = std::max<size_t>(max_cin, static_cast<size_t>(cin_of(o)));
      }
      weight.push_back(w);
      bias.push_back(b);
      ldw.push_back(ld);
      Window<T> win;
      if (has_transform(o.desc)) {  // a transform worth computing once per position
        win.rows = o.desc.kh + 2 * o.desc.stride;
        win.w = nodes[o.in0].w;
        win.c = o.desc.cin_eff;
      }
      windows.push_back(std::move(win));
    }
    zeros.assign(max_cin, T(0));
  }

  // After the dry run: the windows' data, and the nodes given with no rows held as rings of the rows they need.
  void allocate(const std::vector<int64_t>& needed) {
    for (Window<T>& win : windows) win.data.resize(static_cast<size_t>(batch * win.rows * win.w * win.c));
    held.resize(nodes.size());
    for (size_t k = 0; k < nodes.size(); ++k) {
      Node<T>& node = nodes[k];
      if (plan->node_rows[k] != 0) continue;
      node.rows = std::min(node.h, needed[k]);
      held[k].assign(static_cast<size_t>(batch * node.rows * node.w * node.c), T(0));
      node.data = held[k].data();
    }
  }

  // Runs the loop on a team of threads (as many as team_size() allows and the system grants).
  void run_team() {
    const int wanted = team_size();
    std::vector<Scratch> scratch;
    for (int tid = 0; tid < wanted; ++tid) scratch.emplace_back(tiles.rows, gathered_size);
    Barrier barrier;
    std::atomic<bool> start{false};
    std::vector<std::thread> helpers;
    try {
      for (int tid = 1; tid < wanted; ++tid)
        helpers.emplace_back([&, tid] {
          while (!start.load(std::memory_order_acquire)) std::this_thread::yield();
          run(tid, barrier, scratch[tid]);
        });
    } catch (const std::system_error&) {  // no more threads to be had: the team is those that started
    }
    team = 1 + static_cast<int>(helpers.size());
    barrier.set_size(team);
    start.store(true, std::memory_order_release);
    run(0, barrier, scratch[0]);
    for (auto& h : helpers) h.join();
  }
};

// in.nodes: one NHWC tensor (B, H, W, C) per node, the input node pre-filled (image zeros, ones
// channel set inside the image); a node given with zero rows, (B, 0, W, C), is held by the
// engine (a ring of as few rows as the schedule needs) — in.node_heights[k] is every node's full height.
// Returns nothing: the input node holds the samples afterwards.
void cached_sample(const SamplerInputs& in) {
  check_sampler_inputs(in, c10::kCPU);
  for (size_t k = 0; k < in.nodes.size(); ++k) {
    const bool held = in.nodes[k].size(1) == 0 && static_cast<int64_t>(k) != in.input_node && static_cast<int64_t>(k) != in.params_node;
    TORCH_CHECK(in.node_heights[k] > 0 && (in.nodes[k].size(1) == in.node_heights[k] || held), "node ", k, " must have its full height ",
                in.node_heights[k], " (or 0 rows: held by the engine; not the input or params node)");
  }
  for (int64_t op = 0; op < in.op_spec.size(0); ++op) {
    const int64_t* s = in.op_spec.data_ptr<int64_t>() + op * cCols;
    TORCH_CHECK(s[cType] > kDeconv || s[cKh] * s[cKw] <= kMaxTaps, "op ", op, ": more than ", kMaxTaps, " taps");
  }
  AT_DISPATCH_FLOATING_TYPES(in.nodes[0].scalar_type(), "cached_sample", [&] {
    using T = scalar_t;
    const Plan<T> plan = make_plan<T>(in);
    Runner<T> r;
    r.plan = &plan;
    r.batch = plan.batch;
    r.tiles = tiles_for_cpu<T>();
    for (size_t k = 0; k < plan.nodes.size(); ++k) {
      const DevNode<T>& n = plan.nodes[k];
      r.nodes.push_back({n.data, n.c, n.h, n.w, std::max(plan.node_rows[k], 1)});
    }
    r.prepare_ops();
    r.allocate(r.build_schedule(int64_t(plan.height) * plan.width));
    r.run_team();
  });
}

std::string cached_sampler_isa() { return sampler_isa(); }

}  // namespace

void bind_cached_sampler(pybind11::module& m) {
  m.def("cached_sample", &cached_sample, "Cached incremental PixelCNN++ sampling over a lowered op list (CPU)");
  m.def("cached_sampler_isa", &cached_sampler_isa, "The instruction set of the CPU cached sampler's tile kernels (avx512, avx2, baseline)");
}

namespace {
const cpixelcnn::Registration registered(bind_cached_sampler);
}  // namespace
