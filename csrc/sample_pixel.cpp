// Exact per-pixel sampling from a discretized logistic mixture, on the CPU.
//
// The same computation as cpixelcnn.sampling.sample_pixel (the reference), written as a plain
// loop: the cached sampler calls it once per generated pixel, where per-op dispatch overhead of
// a dozen tiny tensor ops would dominate. Layouts are documented in cpixelcnn/sampling.py.
#include <torch/extension.h>

#include <cmath>

namespace {

constexpr double kLogScaleMin = -7.0;

torch::Tensor sample_pixel(torch::Tensor params, torch::Tensor noise, int64_t channels, int64_t bits) {
  TORCH_CHECK(channels == 1 || channels == 3, "channels must be 1 or 3, got ", channels);
  TORCH_CHECK(bits >= 1 && bits <= 16, "bits must be in [1, 16], got ", bits);
  TORCH_CHECK(params.dim() == 2 && noise.dim() == 2, "params and noise must be 2-D (N, n_out) and (N, 1 + C)");
  TORCH_CHECK(params.device().is_cpu() && noise.device().is_cpu(), "sample_pixel runs on CPU tensors");
  const int64_t per_mix = channels == 3 ? 10 : 3;
  const int64_t n = params.size(0);
  const int64_t n_out = params.size(1);
  TORCH_CHECK(n_out > 0 && n_out % per_mix == 0, "params has ", n_out, " channels, expected a multiple of ", per_mix);
  TORCH_CHECK(noise.size(0) == n && noise.size(1) == 1 + channels, "noise must have shape (N, 1 + C)");
  const int64_t k_mix = n_out / per_mix;
  const int64_t per_colour = channels == 3 ? 3 : 2;
  const double half_range = (std::ldexp(1.0, static_cast<int>(bits)) - 1.0) / 2.0;
  const double top_level = 2.0 * half_range;

  auto p = params.to(torch::kFloat64).contiguous();
  auto u = noise.to(torch::kFloat64).contiguous();
  auto out = torch::empty({n, channels}, p.options());
  const double* pp = p.data_ptr<double>();
  const double* up = u.data_ptr<double>();
  double* op = out.data_ptr<double>();

  for (int64_t row = 0; row < n; ++row) {
    const double* logits = pp + row * n_out;
    const double* un = up + row * (1 + channels);
    // component: first k with u * total < cumulative weight k (weights = exp(logit - max))
    double max_logit = logits[0];
    for (int64_t k = 1; k < k_mix; ++k) max_logit = std::max(max_logit, logits[k]);
    double total = 0.0;
    for (int64_t k = 0; k < k_mix; ++k) total += std::exp(logits[k] - max_logit);
    const double threshold = un[0] * total;
    int64_t component = 0;
    double cumulative = 0.0;
    for (int64_t k = 0; k < k_mix; ++k) {
      cumulative += std::exp(logits[k] - max_logit);
      if (cumulative <= threshold) component = k + 1;
    }
    if (component > k_mix - 1) component = k_mix - 1;

    const double* colour_params = logits + k_mix;
    auto param = [&](int64_t colour, int64_t role) { return colour_params[(colour * per_colour + role) * k_mix + component]; };
    double values[3] = {0.0, 0.0, 0.0};
    for (int64_t c = 0; c < channels; ++c) {
      double mean = param(c, 0);
      if (c == 1) mean += std::tanh(param(0, 2)) * values[0];
      if (c == 2) mean += std::tanh(param(1, 2)) * values[0] + std::tanh(param(2, 2)) * values[1];
      const double scale = std::exp(std::max(param(c, 1), kLogScaleMin));
      const double uc = un[1 + c];
      const double draw = mean + scale * (std::log(uc) - std::log1p(-uc));
      double level = std::nearbyint((draw + 1.0) * half_range);  // ties to even, like torch.round
      level = std::min(std::max(level, 0.0), top_level);
      values[c] = level / half_range - 1.0;
      op[row * channels + c] = values[c];
    }
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "cpixelcnn compiled helpers (CPU)";
  m.def("sample_pixel", &sample_pixel, "Exact DMoL sampling of one pixel per row: params (N, n_out), noise (N, 1+C) -> (N, C) float64",
        py::arg("params"), py::arg("noise"), py::arg("channels"), py::arg("bits"));
}
