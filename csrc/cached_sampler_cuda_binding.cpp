// Torch binding of the CUDA cached sampler (built only with a CUDA torch and toolkit): checks the
// tensors, turns them into a Plan and calls the pure-CUDA launcher in csrc/cached_sampler_cuda.cu
// on torch's current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "registry.h"
#include "cached_sampler_cuda_api.h"
#include "cached_sampler_plan.h"

namespace {

using namespace cpixelcnn;

void cached_sample_cuda(const SamplerInputs& in) {
  check_sampler_inputs(in, c10::kCUDA);
  for (size_t k = 0; k < in.nodes.size(); ++k) TORCH_CHECK(in.nodes[k].size(1) == in.node_heights[k], "node ", k, " must be whole");
  const c10::cuda::CUDAGuard guard(in.nodes[0].device());
  AT_DISPATCH_FLOATING_TYPES(in.nodes[0].scalar_type(), "cached_sample_cuda", [&] {
    const auto plan = make_plan<scalar_t>(in);
    const cudaError_t err = cuda::cached_sample_cuda_run(plan, at::cuda::getCurrentCUDAStream().stream(), in.use_graph);
    TORCH_CHECK(err == cudaSuccess, "CUDA cached sampler failed: ", cudaGetErrorString(err));
  });
}

}  // namespace

void bind_cached_sampler_cuda(pybind11::module& m) {
  m.def("cached_sample_cuda", &cached_sample_cuda, "Cached incremental PixelCNN++ sampling over a lowered op list (CUDA)");
}

namespace {
const cpixelcnn::Registration registered(bind_cached_sampler_cuda);
}  // namespace
