// Compiles CUDA kernel source as host C++, so the kernels' own code runs on the CPU.
//
// Include it before a kernels header, in a translation unit built by the host compiler. It
// supplies what such kernels use: the __global__/__device__/__host__ qualifiers (dropped),
// blockIdx/threadIdx/blockDim/gridDim (thread-local, set by the launcher for each emulated
// thread), and the float overloads of the math functions (as CUDA's headers provide them).
// Enough for kernels without shared memory, __syncthreads or warp intrinsics, where every CUDA
// thread is independent: emulating them as a loop over (block, thread) is then exact.
#pragma once

#ifdef __CUDACC__
#error "cuda_host_shim.h compiles CUDA source for the host; do not include it in nvcc builds"
#endif

#include <cmath>

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx{0, 0, 0};
inline thread_local dim3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

// CUDA's math headers overload these for float in the global namespace; <cmath> only in std.
using std::exp;
using std::expm1;
using std::fmax;
using std::fmin;
using std::log;
using std::log1p;
using std::tanh;

namespace cpixelcnn {
namespace host_shim {

// Run threads [0, blockDim) of blocks [block_begin, block_end) of kernel<<<grid, block>>>(args...)
// on the calling thread, one emulated CUDA thread after another.
template <typename... Params, typename... Args>
void run_blocks(void (*kernel)(Params...), unsigned int grid, unsigned int block, unsigned int block_begin, unsigned int block_end, Args&... args) {
  gridDim = dim3{grid, 1, 1};
  blockDim = dim3{block, 1, 1};
  for (unsigned int b = block_begin; b < block_end; ++b) {
    blockIdx = dim3{b, 0, 0};
    for (unsigned int t = 0; t < block; ++t) {
      threadIdx = dim3{t, 0, 0};
      kernel(args...);
    }
  }
}

}  // namespace host_shim
}  // namespace cpixelcnn
