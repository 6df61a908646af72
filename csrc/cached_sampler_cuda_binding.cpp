// Torch binding of the CUDA cached sampler (built only with a CUDA torch and toolkit): checks the
// tensors, turns them into a Plan and calls the pure-CUDA launcher in csrc/cached_sampler_cuda.cu
// on torch's current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "cached_sampler_cuda_api.h"
#include "cached_sampler_plan.h"

namespace {

using namespace cpixelcnn;

void cached_sample_cuda(std::vector<torch::Tensor> nodes, torch::Tensor op_spec, std::vector<torch::Tensor> weights, std::vector<torch::Tensor> biases,
                        std::vector<torch::Tensor> gammas, std::vector<torch::Tensor> betas, std::vector<torch::Tensor> positions,
                        std::vector<torch::Tensor> offsets, int64_t input_node, int64_t params_node, int64_t height, int64_t width,
                        int64_t channels, int64_t bits, torch::Tensor noise, int64_t first_sampled, bool use_graph) {
  const SamplerInputs in{nodes, op_spec, weights, biases, gammas, betas, positions, offsets, input_node, params_node, height, width, channels, bits, noise, first_sampled};
  check_sampler_inputs(in, c10::kCUDA);
  const c10::cuda::CUDAGuard guard(nodes[0].device());
  AT_DISPATCH_FLOATING_TYPES(nodes[0].scalar_type(), "cached_sample_cuda", [&] {
    const auto plan = make_plan<scalar_t>(in);
    const cudaError_t err = cuda::cached_sample_cuda_run(plan, at::cuda::getCurrentCUDAStream().stream(), use_graph);
    TORCH_CHECK(err == cudaSuccess, "CUDA cached sampler failed: ", cudaGetErrorString(err));
  });
}

}  // namespace

void register_cached_sampler_cuda(pybind11::module& m) {
  m.def("cached_sample_cuda", &cached_sample_cuda, "Cached incremental PixelCNN++ sampling over a lowered op list (CUDA)");
}
