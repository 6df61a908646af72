// CUDA kernels of the cached sampler: the same ops as csrc/cached_sampler.cpp, one launch per
// (op, step) covering every position that becomes ready at that step × every image × every
// output channel (the launch order is csrc/cached_sampler_launch.h). Pure CUDA (no torch
// headers) so nvcc compiles it anywhere; it uses no shared memory, synchronisation or warp
// intrinsics, so csrc/cuda_host_shim.h can also compile this very source as host C++ and run it
// on the CPU (the "cuda-emulated" engine).
#pragma once

#include <cstdint>

#include "cached_sampler_types.h"
#include "sample_pixel.h"

namespace cpixelcnn {
namespace cuda {

using namespace cpixelcnn::lowered;  // the op vocabulary and the Plan

template <typename T>
__device__ inline T elu(T v) {
  return v > T(0) ? v : expm1(v);
}

// channel k of the op's (mode-combined, transformed) input at (b, y, x)
template <typename T>
__device__ inline T input_value(const OpDesc& op, const DevNode<T>& a, const DevNode<T>& b2, int b, int y, int x, int k) {
  const int n = op.mode == kConcat ? a.c + b2.c : a.c;
  int base = k;
  T sign = T(1);
  if (op.transform == kConcatElu && k >= n) {
    base = k - n;
    sign = T(-1);
  }
  T raw;
  if (op.mode == kConcat) {
    raw = base < a.c ? a.at(b, y, x)[base] : b2.at(b, y, x)[base - a.c];
  } else if (op.mode == kSum) {
    raw = a.at(b, y, x)[base] + b2.at(b, y, x)[base];
  } else {
    raw = a.at(b, y, x)[base];
  }
  return op.transform == kNone ? raw : elu(sign * raw);
}

// one thread per (position, image, output channel)
template <typename T>
__global__ void step_op_kernel(OpDesc op, DevNode<T> out, DevNode<T> in0, DevNode<T> in1, const T* __restrict__ weight,
                               const T* __restrict__ bias, const T* __restrict__ gamma, const T* __restrict__ beta,
                               const int32_t* __restrict__ positions, int n_positions, int batch) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = static_cast<int64_t>(n_positions) * batch * out.c;
  if (idx >= total) return;
  const int co = static_cast<int>(idx % out.c);
  const int b = static_cast<int>((idx / out.c) % batch);
  const int pos = positions[idx / (static_cast<int64_t>(out.c) * batch)];
  int i = pos / out.w, j = pos % out.w;
  T* dst = out.at(b, i, j) + co;
  if (op.type == kAdd) {
    *dst = in0.at(b, i, j)[co] + in1.at(b, i, j)[co];
    return;
  }
  if (op.type == kGated) {  // out = x + (γa·a + βa)·σ(γb·b + βb)
    const int f = out.c;
    T a = in1.at(b, i, j)[co], g = in1.at(b, i, j)[f + co];
    if (gamma) { a *= gamma[b * 2 * f + co]; g *= gamma[b * 2 * f + f + co]; }
    if (beta) { a += beta[b * 2 * f + co]; g += beta[b * 2 * f + f + co]; }
    *dst = in0.at(b, i, j)[co] + a / (T(1) + exp(-g));
    return;
  }
  if (op.shift == kShiftDown) {
    if (i == 0) { *dst = T(0); return; }
    --i;
  } else if (op.shift == kShiftRight) {
    if (j == 0) { *dst = T(0); return; }
    --j;
  }
  T acc = bias[co];
  const int cout = out.c;
  if (op.type == kConv) {
    const int cin = op.cin_eff;
    for (int ki = 0; ki < op.kh; ++ki) {
      const int y = i * op.stride - op.pad_top + ki;
      if (y < 0 || y >= in0.h) continue;
      for (int kj = 0; kj < op.kw; ++kj) {
        const int x = j * op.stride - op.pad_left + kj;
        if (x < 0 || x >= in0.w) continue;
        const T* w = weight + static_cast<int64_t>(ki * op.kw + kj) * cin * cout + co;
        for (int ci = 0; ci < cin; ++ci) acc += input_value(op, in0, in1, b, y, x, ci) * w[static_cast<int64_t>(ci) * cout];
      }
    }
  } else {  // transposed conv; output (i, j) is the uncropped output (i, j + pad_left)
    const int cin = in0.c;
    const int jj = j + op.pad_left;
    for (int ki = 0; ki < op.kh; ++ki) {
      const int yy = i - ki;
      if (yy < 0 || yy % op.stride) continue;
      const int y = yy / op.stride;
      if (y >= in0.h) continue;
      for (int kj = 0; kj < op.kw; ++kj) {
        const int xx = jj - kj;
        if (xx < 0 || xx % op.stride) continue;
        const int x = xx / op.stride;
        if (x >= in0.w) continue;
        const T* w = weight + static_cast<int64_t>(ki * op.kw + kj) * cin * cout + co;
        const T* v = in0.at(b, y, x);
        for (int ci = 0; ci < cin; ++ci) acc += v[ci] * w[static_cast<int64_t>(ci) * cout];
      }
    }
  }
  *dst = acc;
}

template <int kChannels, typename T>
__device__ inline void sample_into(const DevNode<T>& params, const DevNode<T>& input, const double* noise, int b, int i, int j, int height, int width,
                                   int bits, double temperature) {
  double value[kChannels];  // constant indices only: stays in registers
  sample_one_fixed<kChannels>(params.at(b, i, j), params.c, noise + ((static_cast<int64_t>(b) * height + i) * width + j) * (1 + kChannels), bits, temperature, value);
  T* x = input.at(b, i, j);
  CPIXELCNN_UNROLL
  for (int c = 0; c < kChannels; ++c) x[c] = static_cast<T>(value[c]);
}

// one thread per image: sample pixel (i, j) and write it into the input cache
template <typename T>
__global__ void sample_pixel_kernel(DevNode<T> params, DevNode<T> input, const double* __restrict__ noise, int i, int j, int height, int width,
                                    int channels, int bits, double temperature, int batch) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= batch) return;
  if (channels == 3) {
    sample_into<3>(params, input, noise, b, i, j, height, width, bits, temperature);
  } else {
    sample_into<1>(params, input, noise, b, i, j, height, width, bits, temperature);
  }
}

}  // namespace cuda
}  // namespace cpixelcnn
