// Exact per-pixel sampling from a discretized logistic mixture, on CPU tensors.
#include <torch/extension.h>

#include "registry.h"
#include "sample_pixel.h"

namespace {

torch::Tensor sample_pixel(torch::Tensor params, torch::Tensor noise, int64_t channels, int64_t bits, double temperature) {
  TORCH_CHECK(channels == 1 || channels == 3, "channels must be 1 or 3, got ", channels);
  TORCH_CHECK(bits >= 1 && bits <= 16, "bits must be in [1, 16], got ", bits);
  TORCH_CHECK(std::isfinite(temperature) && temperature > 0, "temperature must be a finite number > 0, got ", temperature);
  TORCH_CHECK(params.dim() == 2 && noise.dim() == 2, "params and noise must be 2-D (N, n_out) and (N, 1 + C)");
  TORCH_CHECK(params.device().is_cpu() && noise.device().is_cpu(), "sample_pixel runs on CPU tensors");
  const int64_t per_mix = cpixelcnn::params_per_mixture(channels);
  const int64_t n = params.size(0), n_out = params.size(1);
  TORCH_CHECK(n_out > 0 && n_out % per_mix == 0, "params has ", n_out, " channels, expected a multiple of ", per_mix);
  TORCH_CHECK(noise.size(0) == n && noise.size(1) == 1 + channels, "noise must have shape (N, 1 + C)");
  auto p = params.to(torch::kFloat64).contiguous();
  auto u = noise.to(torch::kFloat64).contiguous();
  auto out = torch::empty({n, channels}, p.options());
  for (int64_t row = 0; row < n; ++row) {
    cpixelcnn::sample_one(p.data_ptr<double>() + row * n_out, n_out, u.data_ptr<double>() + row * (1 + channels), channels, bits,
                          temperature, out.data_ptr<double>() + row * channels);
  }
  return out;
}

}  // namespace

void bind_sample_pixel(pybind11::module& m) {
  m.def("sample_pixel", &sample_pixel, "Exact DMoL sampling of one pixel per row: params (N, n_out), noise (N, 1+C) -> (N, C) float64",
        py::arg("params"), py::arg("noise"), py::arg("channels"), py::arg("bits"), py::arg("temperature") = 1.0);
}

namespace {
const cpixelcnn::Registration registered(bind_sample_pixel);
}  // namespace
