// Exact sampling of one pixel from its discretized-logistic-mixture parameters (float64 math).
// The reference is cpixelcnn.sampling.sample_pixel; the layouts are documented there.
// Plain C++ so that nvcc compiles it for the device too (CPIXELCNN_HD).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define CPIXELCNN_HD __host__ __device__
#define CPIXELCNN_UNROLL _Pragma("unroll")
#else
#define CPIXELCNN_HD
#define CPIXELCNN_UNROLL
#endif

namespace cpixelcnn {

// The DMoL parameter layout (cpixelcnn/dmol_layout.py): K logits, then per colour its roles
// (mean, log-scale and, for RGB, the colour coefficient), each K channels.
constexpr double kLogScaleMin = -7.0;
enum Role : int64_t { kMean = 0, kLogScale = 1, kCoeff = 2 };
CPIXELCNN_HD constexpr int64_t roles_per_colour(int64_t channels) { return channels == 3 ? 3 : 2; }
CPIXELCNN_HD constexpr int64_t params_per_mixture(int64_t channels) { return 1 + channels * roles_per_colour(channels); }

// params: n_out values of one pixel (any floating type, read as double); u: 1 + kChannels
// uniforms; temperature T > 0: mixture logits divided by T, logistic scales multiplied by T
// (T = 1 is exact: both are then exact no-ops in IEEE arithmetic); out: kChannels grid values in [-1, 1]. The channel count is a template argument so
// that every loop over colours unrolls and ``out`` stays in registers on the GPU.
template <int kChannels, typename P>
CPIXELCNN_HD inline void sample_one_fixed(const P* params_in, int64_t n_out, const double* u, int64_t bits, double temperature, double* out) {
  auto params = [&](int64_t k) { return static_cast<double>(params_in[k]); };
  constexpr int64_t per_mix = params_per_mixture(kChannels);
  constexpr int64_t per_colour = roles_per_colour(kChannels);
  const int64_t k_mix = n_out / per_mix;
  const double half_range = (ldexp(1.0, static_cast<int>(bits)) - 1.0) / 2.0;
  const double top_level = 2.0 * half_range;
  // component: first k with u * total < cumulative weight k (weights = exp(logit - max))
  double max_logit = params(0);
  for (int64_t k = 1; k < k_mix; ++k) max_logit = fmax(max_logit, params(k));
  double total = 0.0;
  for (int64_t k = 0; k < k_mix; ++k) total += exp((params(k) - max_logit) / temperature);
  const double threshold = u[0] * total;
  int64_t component = 0;
  double cumulative = 0.0;
  for (int64_t k = 0; k < k_mix; ++k) {
    cumulative += exp((params(k) - max_logit) / temperature);
    if (cumulative <= threshold) component = k + 1;
  }
  if (component > k_mix - 1) component = k_mix - 1;
  auto param = [&](int64_t colour, int64_t role) { return params(k_mix + (colour * per_colour + role) * k_mix + component); };
  CPIXELCNN_UNROLL
  for (int c = 0; c < kChannels; ++c) {
    double mean = param(c, kMean);
    if (c == 1) mean += tanh(param(0, kCoeff)) * out[0];
    if (c == 2) mean += tanh(param(1, kCoeff)) * out[0] + tanh(param(2, kCoeff)) * out[1];
    const double scale = exp(fmax(param(c, kLogScale), kLogScaleMin)) * temperature;
    const double draw = mean + scale * (log(u[1 + c]) - log1p(-u[1 + c]));
    const double level = fmin(fmax(nearbyint((draw + 1.0) * half_range), 0.0), top_level);  // ties to even, like torch.round
    out[c] = level / half_range - 1.0;
  }
}

// The same for a channel count known at run time (1 or 3).
template <typename P>
CPIXELCNN_HD inline void sample_one(const P* params_in, int64_t n_out, const double* u, int64_t channels, int64_t bits, double temperature, double* out) {
  if (channels == 3) {
    sample_one_fixed<3>(params_in, n_out, u, bits, temperature, out);
  } else {
    sample_one_fixed<1>(params_in, n_out, u, bits, temperature, out);
  }
}

}  // namespace cpixelcnn
