// The "cuda-emulated" engine: the CUDA cached sampler's own kernels (csrc/cached_sampler_cuda.cuh)
// and launch order (csrc/cached_sampler_launch.h), compiled as host C++ through
// csrc/cuda_host_shim.h and run on CPU tensors. Each launch runs every (block, thread) of its
// grid; blocks are spread over the CPU threads, which is exact because the kernels' threads are
// independent. It exists to execute the GPU code's arithmetic and indexing where no GPU is: its
// images must equal the naive sampler's (tests/test_cached_sampler.py), not to be fast.
#include "registry.h"
#include "cuda_host_shim.h"  // must precede the kernels

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "cached_sampler_launch.h"
#include "cached_sampler_plan.h"

namespace {

using namespace cpixelcnn;

struct HostLaunch {
  int64_t* launches;
  template <typename... Params, typename... Args>
  bool operator()(void (*kernel)(Params...), int blocks, int threads, Args&&... args) const {
    ++*launches;
    const int64_t grain = std::max<int64_t>(1, 4096 / threads);  // small launches stay on the calling thread
    at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
      host_shim::run_blocks(kernel, static_cast<unsigned>(blocks), static_cast<unsigned>(threads), static_cast<unsigned>(b0), static_cast<unsigned>(b1),
                            args...);
    });
    return true;
  }
};

// The same inputs as every engine (CPU tensors, every node whole). Returns the number of kernel launches made.
int64_t cached_sample_emulated(const SamplerInputs& in) {
  check_sampler_inputs(in, c10::kCPU);
  for (size_t k = 0; k < in.nodes.size(); ++k) TORCH_CHECK(in.nodes[k].size(1) == in.node_heights[k], "node ", k, " must be whole");
  int64_t launches = 0;
  AT_DISPATCH_FLOATING_TYPES(in.nodes[0].scalar_type(), "cached_sample_emulated", [&] {
    const auto plan = make_plan<scalar_t>(in);
    cuda::launch_steps(plan, HostLaunch{&launches});
  });
  return launches;
}

}  // namespace

void bind_cached_sampler_emulated(pybind11::module& m) {
  m.def("cached_sample_emulated", &cached_sample_emulated,
        "The CUDA cached sampler's kernels and launch order run on the CPU through a host shim; returns the number of launches");
}

namespace {
const cpixelcnn::Registration registered(bind_cached_sampler_emulated);
}  // namespace
