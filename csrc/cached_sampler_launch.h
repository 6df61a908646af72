// The cached sampler's launch order: for every generation step t, one step_op_kernel launch per
// op with positions ready at t, then one sample_pixel_kernel launch for pixel t (none for the
// given pixels of a completion, t < first_sampled: they are already in the input cache). Written once,
// templated on how a launch happens, so the CUDA launcher (csrc/cached_sampler_cuda.cu,
// triple-chevron launches, optionally captured into a CUDA graph) and the CPU emulation
// (csrc/cached_sampler_emulated.cpp, loops over blocks and threads) run the same sequence.
// No torch headers: nvcc compiles it inside a pure-CUDA translation unit.
#pragma once

#include <cstdint>

#include "cached_sampler_cuda.cuh"
#include "cached_sampler_types.h"

namespace cpixelcnn {
namespace cuda {

constexpr int kStepThreads = 256;   // threads per block of step_op_kernel
constexpr int kSampleThreads = 128;  // threads per block of sample_pixel_kernel

inline int blocks_for(int64_t threads, int per_block) { return static_cast<int>((threads + per_block - 1) / per_block); }

// Issue every launch of a sampling run, in order, through ``launch(kernel, blocks, threads, args...)``.
// Stops at the first launch that returns false.
template <typename T, typename Launch>
bool launch_steps(const Plan<T>& plan, Launch&& launch) {
  for (int64_t t = 0; t < static_cast<int64_t>(plan.height) * plan.width; ++t) {
    for (const StepOp<T>& op : plan.ops) {
      const int64_t begin = op.offsets[t], count = op.offsets[t + 1] - op.offsets[t];
      if (count == 0) continue;
      const DevNode<T>& out = plan.nodes[op.out];
      if (!launch(step_op_kernel<T>, blocks_for(count * plan.batch * out.c, kStepThreads), kStepThreads, op.desc, out, plan.nodes[op.in0],
                  plan.nodes[op.in1], op.weight, op.bias, op.gamma, op.beta, op.positions + begin, static_cast<int>(count), plan.batch))
        return false;
    }
    if (t >= plan.first_sampled && !launch(sample_pixel_kernel<T>, blocks_for(plan.batch, kSampleThreads), kSampleThreads, plan.nodes[plan.params_node],
                plan.nodes[plan.input_node], plan.noise, static_cast<int>(t / plan.width), static_cast<int>(t % plan.width), plan.height,
                plan.width, plan.channels, plan.bits, plan.temperature, plan.batch))
      return false;
  }
  return true;
}

// The number of kernel launches of one sampling run (what a GPU pays launch latency for).
template <typename T>
int64_t count_launches(const Plan<T>& plan) {
  int64_t n = 0;
  launch_steps(plan, [&](auto, int, int, auto&&...) { ++n; return true; });
  return n;
}

}  // namespace cuda
}  // namespace cpixelcnn
