// The cached sampler's matrix product: C[r, n0:n1] = bias + Σ_taps A_tap[r] · W_tap, a few rows at a time.
//
// Row r of A is not stored: it is the concatenation over the op's taps of cin-long vectors found
// through pointers (into the input cache, the op's transformed-input window, or a zero vector),
// so no im2col copy is made; row r of C is a pointer too (straight into the output cache).
// W is (taps·cin, ldw) row-major with ldw a multiple of the vector length (padded columns are
// zero), so every weight load is a whole vector. Each call computes a tile of R ≤ 8 rows ×
// V vectors of columns in registers; the summation order over k is fixed (bias, then taps in
// order, then channels in order), so results do not depend on how threads split the work.
//
// Written with GCC/Clang vector extensions and compiled three times (AVX-512, AVX2+FMA and the
// baseline ISA) by including this file under different target options; see cached_sampler.cpp.
// No include guard on purpose: each inclusion defines the kernels in the namespace
// CPIXELCNN_GEMM_NS with the function attribute CPIXELCNN_GEMM_TARGET, and undefines the
// CPIXELCNN_GEMM_* parameters at its end.

namespace CPIXELCNN_GEMM_NS {

// Vector lengths in elements: L32 for float, L64 for double (CPIXELCNN_GEMM_BYTES wide).
constexpr int kBytes = CPIXELCNN_GEMM_BYTES;

template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(kBytes)));
};

// taps: how many taps this tile reads; tap_ids[t]: which weight rows (tap_ids[t]·cin onwards) they
// are; a[r·taps + t]: tap t's cin inputs of row r; c[r]: where row r's columns go (n_store of them).
template <typename T, int R, int V>
CPIXELCNN_GEMM_TARGET void tile(int taps, const int* tap_ids, int cin, const T* const* a, const T* w, long ldw, const T* bias, T* const* c,
                                int n_store) {
  typedef typename VecOf<T>::type vec;
  constexpr int L = kBytes / static_cast<int>(sizeof(T));
  vec acc[R][V];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) {
    vec b;
    __builtin_memcpy(&b, bias + v * L, sizeof(vec));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r][v] = b;
  }
  for (int t = 0; t < taps; ++t) {
    const T* ap[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) ap[r] = a[r * taps + t];
    const T* wt = w + static_cast<long>(tap_ids[t]) * cin * ldw;
    for (int k = 0; k < cin; ++k) {
      vec wv[V];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) __builtin_memcpy(&wv[v], wt + v * L, sizeof(vec));
      wt += ldw;
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const T s = ap[r][k];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) acc[r][v] += s * wv[v];
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      const int left = n_store - v * L;
      if (left >= L) {
        __builtin_memcpy(c[r] + v * L, &acc[r][v], sizeof(vec));
      } else if (left > 0) {  // the last, partial vector: only the node's own channels
        T tmp[L];
        __builtin_memcpy(tmp, &acc[r][v], sizeof(vec));
        for (int e = 0; e < left; ++e) c[r][v * L + e] = tmp[e];
      }
    }
  }
}

template <typename T>
using TileFn = void (*)(int, const int*, int, const T* const*, const T*, long, const T*, T* const*, int);

constexpr int kMaxRows = CPIXELCNN_GEMM_ROWS;  // R of a full tile
constexpr int kMaxVecs = CPIXELCNN_GEMM_VECS;  // V of a full tile

template <typename T, int R, int... Vs>
constexpr std::array<TileFn<T>, sizeof...(Vs)> tiles_row(std::integer_sequence<int, Vs...>) {
  return {&tile<T, R, Vs + 1>...};
}
template <typename T, int... Rs>
constexpr std::array<std::array<TileFn<T>, kMaxVecs>, sizeof...(Rs)> tiles_all(std::integer_sequence<int, Rs...>) {
  return {tiles_row<T, Rs + 1>(std::make_integer_sequence<int, kMaxVecs>())...};
}

// table[R - 1][V - 1]: the tile kernel for R rows and V vectors
template <typename T>
const std::array<std::array<TileFn<T>, kMaxVecs>, kMaxRows>& tile_table() {
  static constexpr auto table = tiles_all<T>(std::make_integer_sequence<int, kMaxRows>());
  return table;
}

}  // namespace CPIXELCNN_GEMM_NS

// The parameters belong to this inclusion alone; the next one defines its own.
#undef CPIXELCNN_GEMM_NS
#undef CPIXELCNN_GEMM_TARGET
#undef CPIXELCNN_GEMM_BYTES
#undef CPIXELCNN_GEMM_ROWS
#undef CPIXELCNN_GEMM_VECS
