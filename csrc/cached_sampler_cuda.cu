// Host side of the CUDA cached sampler (built only with a CUDA torch and toolkit). The per-step
// schedule lives on the host (offsets) and device (positions); every (op, step) with ready
// positions is one launch of step_op_kernel, then one sample_pixel_kernel. With use_graph the
// whole loop is captured into one CUDA graph and replayed, so launch latency is paid at capture.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <vector>

#include "cached_sampler_cuda.cuh"

namespace {

using namespace cpixelcnn::cuda;

constexpr int kThreads = 256;

void cached_sample_cuda(std::vector<torch::Tensor> nodes, torch::Tensor op_spec, std::vector<torch::Tensor> weights, std::vector<torch::Tensor> biases,
                        std::vector<torch::Tensor> gammas, std::vector<torch::Tensor> betas, std::vector<torch::Tensor> positions,
                        std::vector<torch::Tensor> offsets, int64_t input_node, int64_t params_node, int64_t height, int64_t width,
                        int64_t channels, int64_t bits, torch::Tensor noise, bool use_graph) {
  TORCH_CHECK(op_spec.device().is_cpu() && op_spec.dtype() == torch::kInt64 && op_spec.dim() == 2 && op_spec.size(1) == 13 && op_spec.is_contiguous(), "op_spec must be a CPU int64 (n_ops, 13) tensor");
  TORCH_CHECK(!nodes.empty() && nodes[0].is_cuda(), "nodes must be CUDA tensors");
  TORCH_CHECK(noise.is_cuda() && noise.dtype() == torch::kFloat64 && noise.is_contiguous(), "noise must be contiguous float64 on the GPU");
  TORCH_CHECK(channels >= 1 && channels <= 3, "channels must be 1 or 3");
  const c10::cuda::CUDAGuard guard(nodes[0].device());
  const int64_t n_ops = op_spec.size(0);
  const int batch = static_cast<int>(nodes[0].size(0));
  const int64_t* spec = op_spec.data_ptr<int64_t>();
  for (int64_t op = 0; op < n_ops; ++op) {
    TORCH_CHECK(offsets[op].device().is_cpu() && offsets[op].numel() == height * width + 1, "offsets of op ", op, " must be CPU int64 with H*W+1 entries");
    TORCH_CHECK(positions[op].is_cuda() && positions[op].dtype() == torch::kInt32, "positions of op ", op, " must be CUDA int32");
  }

  AT_DISPATCH_FLOATING_TYPES(nodes[0].scalar_type(), "cached_sample_cuda", [&] {
    std::vector<DevNode<scalar_t>> dn;
    for (auto& n : nodes) {
      TORCH_CHECK(n.is_cuda() && n.is_contiguous() && n.scalar_type() == nodes[0].scalar_type() && n.size(0) == batch, "nodes must be contiguous CUDA (B, H, W, C) tensors of one dtype");
      dn.push_back({n.data_ptr<scalar_t>(), static_cast<int>(n.size(3)), static_cast<int>(n.size(1)), static_cast<int>(n.size(2))});
    }
    auto ptr = [&](const torch::Tensor& t) -> const scalar_t* { return (t.defined() && t.numel()) ? t.data_ptr<scalar_t>() : nullptr; };
    auto launch_all = [&](cudaStream_t stream) {
      for (int64_t t = 0; t < height * width; ++t) {
        for (int64_t op = 0; op < n_ops; ++op) {
          const int64_t* off = offsets[op].data_ptr<int64_t>();
          const int64_t begin = off[t], count = off[t + 1] - off[t];
          if (count == 0) continue;
          const int64_t* s = spec + op * 13;
          const OpDesc desc{static_cast<int>(s[0]), static_cast<int>(s[4]), static_cast<int>(s[5]), static_cast<int>(s[6]), static_cast<int>(s[7]),
                            static_cast<int>(s[8]), static_cast<int>(s[9]), static_cast<int>(s[10]), static_cast<int>(s[11]), static_cast<int>(s[12])};
          const DevNode<scalar_t>& out = dn[s[1]];
          const int64_t total = count * batch * out.c;
          const int blocks = static_cast<int>((total + kThreads - 1) / kThreads);
          step_op_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(desc, out, dn[s[2]], dn[s[3]], ptr(weights[op]), ptr(biases[op]), ptr(gammas[op]), ptr(betas[op]),
                                                                    positions[op].data_ptr<int32_t>() + begin, static_cast<int>(count), batch);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
        sample_pixel_kernel<scalar_t><<<(batch + 127) / 128, 128, 0, stream>>>(dn[params_node], dn[input_node], noise.data_ptr<double>(), static_cast<int>(t / width),
                                                                               static_cast<int>(t % width), static_cast<int>(height), static_cast<int>(width),
                                                                               static_cast<int>(channels), static_cast<int>(bits), batch);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    };
    if (use_graph) {
      at::cuda::getCurrentCUDAStream().synchronize();  // inputs ready before the capture stream runs
      auto stream = at::cuda::getStreamFromPool();
      {
        at::cuda::CUDAStreamGuard stream_guard(stream);
        at::cuda::CUDAGraph graph;
        graph.capture_begin();
        launch_all(stream);
        graph.capture_end();
        graph.replay();
        stream.synchronize();
      }
    } else {
      launch_all(at::cuda::getCurrentCUDAStream());
    }
  });
}

}  // namespace

void register_cached_sampler_cuda(pybind11::module& m) {
  m.def("cached_sample_cuda", &cached_sample_cuda, "Cached incremental PixelCNN++ sampling over a lowered op list (CUDA)");
}
