// The extension module cpixelcnn._C: one PYBIND11_MODULE, each source registers its functions.
#include <torch/extension.h>

void register_sample_pixel(pybind11::module& m);
void register_cached_sampler(pybind11::module& m);
void register_cached_sampler_emulated(pybind11::module& m);
#ifdef CPIXELCNN_WITH_CUDA
void register_cached_sampler_cuda(pybind11::module& m);
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "cpixelcnn compiled kernels (CPU; CUDA when built with CPIXELCNN_WITH_CUDA)";
  register_sample_pixel(m);
  register_cached_sampler(m);
  register_cached_sampler_emulated(m);
#ifdef CPIXELCNN_WITH_CUDA
  register_cached_sampler_cuda(m);
#endif
}
