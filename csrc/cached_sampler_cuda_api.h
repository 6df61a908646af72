// The entry point of the pure-CUDA translation unit csrc/cached_sampler_cuda.cu, for C++ callers
// (the torch binding). Only CUDA runtime types cross this boundary.
#pragma once

#include <cuda_runtime_api.h>

#include "cached_sampler_types.h"

namespace cpixelcnn {
namespace cuda {

// Run every launch of ``plan`` on ``stream`` (use_graph: captured into one CUDA graph and
// replayed on a private stream, synchronised before returning). Returns the first CUDA error.
template <typename T>
cudaError_t cached_sample_cuda_run(const lowered::Plan<T>& plan, cudaStream_t stream, bool use_graph);

}  // namespace cuda
}  // namespace cpixelcnn
