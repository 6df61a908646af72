// Cached incremental PixelCNN++ sampling on the CPU: every activation is computed once.
//
// The model arrives lowered to a flat list of ops over activation caches ("nodes", NHWC per
// image), with a per-op schedule: for generation step t, the output positions that become
// computable once pixels < t are final (built and checked in cpixelcnn/cached.py). At step t
// each op computes exactly those positions, then pixel t is sampled from the DMoL parameters at
// its position and written into the input cache. Total arithmetic is one forward pass.
//
// Images are independent during sampling, so threads take disjoint sets of images and run the
// whole loop without synchronising; nothing is allocated inside the loop.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>
#include <vector>

#include "cached_sampler_plan.h"
#include "sample_pixel.h"

namespace {

using namespace cpixelcnn::cuda;  // op types, input modes, transforms, shifts: one definition for every engine
using namespace cpixelcnn;        // op_spec columns, input checks

template <typename T>
inline T elu(T v) {
  return v > T(0) ? v : std::expm1(v);
}

template <typename T>
struct Node {
  T* data;  // B x H x W x C
  int64_t c, h, w;
  inline T* at(int64_t b, int64_t i, int64_t j) const { return data + ((b * h + i) * w + j) * c; }
};

template <typename T>
struct Runner {
  std::vector<Node<T>> nodes;
  std::vector<const int64_t*> spec;
  std::vector<const T*> weight, bias, gamma, beta;
  std::vector<const int32_t*> positions;
  std::vector<const int64_t*> offsets;
  int64_t max_cin = 0, max_cout = 0;

  // v <- transform(inputs at (b, y, x)); returns its length
  int64_t gather(const int64_t* s, int64_t b, int64_t y, int64_t x, T* v) const {
    const Node<T>& a = nodes[s[cIn0]];
    const T* pa = a.at(b, y, x);
    int64_t n = a.c;
    if (s[cMode] == kConcat) {
      const Node<T>& bn = nodes[s[cIn1]];
      const T* pb = bn.at(b, y, x);
      for (int64_t k = 0; k < a.c; ++k) v[k] = pa[k];
      for (int64_t k = 0; k < bn.c; ++k) v[a.c + k] = pb[k];
      n = a.c + bn.c;
    } else if (s[cMode] == kSum) {
      const T* pb = nodes[s[cIn1]].at(b, y, x);
      for (int64_t k = 0; k < n; ++k) v[k] = pa[k] + pb[k];
    } else {
      for (int64_t k = 0; k < n; ++k) v[k] = pa[k];
    }
    if (s[cTransform] == kElu) {
      for (int64_t k = 0; k < n; ++k) v[k] = elu(v[k]);
    } else if (s[cTransform] == kConcatElu) {  // [elu(v), elu(-v)]
      for (int64_t k = 0; k < n; ++k) {
        v[n + k] = elu(-v[k]);
        v[k] = elu(v[k]);
      }
      n *= 2;
    }
    return n;
  }

  // acc[cout] += W[ki][kj]^T v   (W laid out kh x kw x cin x cout)
  static inline void axpy_block(const T* w, const T* v, int64_t cin, int64_t cout, T* acc) {
    for (int64_t ci = 0; ci < cin; ++ci) {
      const T vi = v[ci];
      const T* row = w + ci * cout;
      for (int64_t co = 0; co < cout; ++co) acc[co] += vi * row[co];
    }
  }

  void conv(int64_t op, int64_t b, int64_t i, int64_t j, T* v) const {
    const int64_t* s = spec[op];
    const Node<T>& out = nodes[s[cOut]];
    const Node<T>& in = nodes[s[cIn0]];
    T* acc = out.at(b, i, j);
    const int64_t cout = out.c, cin = s[cCinEff], kh = s[cKh], kw = s[cKw];
    if (s[cShift] == kShiftDown) {
      if (i == 0) { for (int64_t co = 0; co < cout; ++co) acc[co] = T(0); return; }
      --i;
    } else if (s[cShift] == kShiftRight) {
      if (j == 0) { for (int64_t co = 0; co < cout; ++co) acc[co] = T(0); return; }
      --j;
    }
    const T* bias_p = bias[op];
    for (int64_t co = 0; co < cout; ++co) acc[co] = bias_p[co];
    const T* w = weight[op];
    for (int64_t ki = 0; ki < kh; ++ki) {
      const int64_t y = i * s[cStride] - s[cPadTop] + ki;
      if (y < 0 || y >= in.h) continue;
      for (int64_t kj = 0; kj < kw; ++kj) {
        const int64_t x = j * s[cStride] - s[cPadLeft] + kj;
        if (x < 0 || x >= in.w) continue;
        gather(s, b, y, x, v);
        axpy_block(w + (ki * kw + kj) * cin * cout, v, cin, cout, acc);
      }
    }
  }

  // transposed conv, stride s, then the crop: output (i, j) is full-output (i, j + pad_left)
  void deconv(int64_t op, int64_t b, int64_t i, int64_t j) const {
    const int64_t* s = spec[op];
    const Node<T>& out = nodes[s[cOut]];
    const Node<T>& in = nodes[s[cIn0]];
    T* acc = out.at(b, i, j);
    const int64_t cout = out.c, cin = in.c, kh = s[cKh], kw = s[cKw], stride = s[cStride];
    const T* bias_p = bias[op];
    for (int64_t co = 0; co < cout; ++co) acc[co] = bias_p[co];
    const T* w = weight[op];
    const int64_t jj = j + s[cPadLeft];
    for (int64_t ki = 0; ki < kh; ++ki) {
      const int64_t yy = i - ki;
      if (yy < 0 || yy % stride) continue;
      const int64_t y = yy / stride;
      if (y >= in.h) continue;
      for (int64_t kj = 0; kj < kw; ++kj) {
        const int64_t xx = jj - kj;
        if (xx < 0 || xx % stride) continue;
        const int64_t x = xx / stride;
        if (x >= in.w) continue;
        axpy_block(w + (ki * kw + kj) * cin * cout, in.at(b, y, x), cin, cout, acc);
      }
    }
  }

  void add(int64_t op, int64_t b, int64_t i, int64_t j) const {
    const int64_t* s = spec[op];
    const Node<T>& out = nodes[s[cOut]];
    const T* pa = nodes[s[cIn0]].at(b, i, j);
    const T* pb = nodes[s[cIn1]].at(b, i, j);
    T* po = out.at(b, i, j);
    for (int64_t k = 0; k < out.c; ++k) po[k] = pa[k] + pb[k];
  }

  // out = x + (γa·a + βa)·σ(γb·b + βb), h = [a | b]
  void gated(int64_t op, int64_t b, int64_t i, int64_t j) const {
    const int64_t* s = spec[op];
    const Node<T>& out = nodes[s[cOut]];
    const int64_t f = out.c;
    const T* px = nodes[s[cIn0]].at(b, i, j);
    const T* ph = nodes[s[cIn1]].at(b, i, j);
    const T* g = gamma[op] ? gamma[op] + b * 2 * f : nullptr;
    const T* be = beta[op] ? beta[op] + b * 2 * f : nullptr;
    T* po = out.at(b, i, j);
    for (int64_t k = 0; k < f; ++k) {
      T a = ph[k], gate_in = ph[f + k];
      if (g) { a *= g[k]; gate_in *= g[f + k]; }
      if (be) { a += be[k]; gate_in += be[f + k]; }
      po[k] = px[k] + a / (T(1) + std::exp(-gate_in));
    }
  }
};

template <typename T>
void run(Runner<T>& r, int64_t input_node, int64_t params_node, int64_t height, int64_t width, int64_t channels, int64_t bits,
         const double* noise, int64_t batch) {
  const int64_t n_ops = static_cast<int64_t>(r.spec.size());
  const int64_t n_out = r.nodes[params_node].c;
  at::parallel_for(0, batch, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> v(static_cast<size_t>(4 * r.max_cin + 8));
    std::vector<double> value(static_cast<size_t>(channels));
    for (int64_t t = 0; t < height * width; ++t) {
      for (int64_t op = 0; op < n_ops; ++op) {
        const int64_t begin = r.offsets[op][t], end = r.offsets[op][t + 1];
        if (begin == end) continue;
        const int64_t type = r.spec[op][cType];
        const int64_t out_w = r.nodes[r.spec[op][cOut]].w;
        for (int64_t p = begin; p < end; ++p) {
          const int64_t i = r.positions[op][p] / out_w, j = r.positions[op][p] % out_w;
          for (int64_t b = b0; b < b1; ++b) {
            switch (type) {
              case kConv: r.conv(op, b, i, j, v.data()); break;
              case kDeconv: r.deconv(op, b, i, j); break;
              case kAdd: r.add(op, b, i, j); break;
              default: r.gated(op, b, i, j); break;
            }
          }
        }
      }
      const int64_t i = t / width, j = t % width;
      for (int64_t b = b0; b < b1; ++b) {
        cpixelcnn::sample_one(r.nodes[params_node].at(b, i, j), n_out, noise + ((b * height + i) * width + j) * (1 + channels), channels, bits, value.data());
        T* x = r.nodes[input_node].at(b, i, j);
        for (int64_t c = 0; c < channels; ++c) x[c] = static_cast<T>(value[c]);
      }
    }
  });
}

// nodes: one NHWC tensor (B, H, W, C) per node, the input node pre-filled (image zeros, ones
// channel set inside the image). Returns nothing: the input node holds the samples afterwards.
void cached_sample(std::vector<torch::Tensor> nodes, torch::Tensor op_spec, std::vector<torch::Tensor> weights, std::vector<torch::Tensor> biases,
                   std::vector<torch::Tensor> gammas, std::vector<torch::Tensor> betas, std::vector<torch::Tensor> positions,
                   std::vector<torch::Tensor> offsets, int64_t input_node, int64_t params_node, int64_t height, int64_t width,
                   int64_t channels, int64_t bits, torch::Tensor noise) {
  const SamplerInputs in{nodes, op_spec, weights, biases, gammas, betas, positions, offsets, input_node, params_node, height, width, channels, bits, noise};
  check_sampler_inputs(in, c10::kCPU);
  const int64_t n_ops = op_spec.size(0);
  const int64_t batch = nodes[0].size(0);
  AT_DISPATCH_FLOATING_TYPES(nodes[0].scalar_type(), "cached_sample", [&] {
    Runner<scalar_t> r;
    for (auto& n : nodes) r.nodes.push_back({n.data_ptr<scalar_t>(), n.size(3), n.size(1), n.size(2)});
    for (int64_t op = 0; op < n_ops; ++op) {
      const int64_t* s = op_spec.data_ptr<int64_t>() + op * cCols;
      r.spec.push_back(s);
      r.weight.push_back(data_or_null<scalar_t>(weights[op]));
      r.bias.push_back(data_or_null<scalar_t>(biases[op]));
      r.gamma.push_back(data_or_null<scalar_t>(gammas[op]));
      r.beta.push_back(data_or_null<scalar_t>(betas[op]));
      if (s[cType] == kConv || s[cType] == kDeconv) r.max_cin = std::max(r.max_cin, s[cType] == kConv ? s[cCinEff] : r.nodes[s[cIn0]].c);
      r.positions.push_back(positions[op].data_ptr<int32_t>());
      r.offsets.push_back(offsets[op].data_ptr<int64_t>());
    }
    run<scalar_t>(r, input_node, params_node, height, width, channels, bits, noise.data_ptr<double>(), batch);
  });
}

}  // namespace

void register_cached_sampler(pybind11::module& m) {
  m.def("cached_sample", &cached_sample, "Cached incremental PixelCNN++ sampling over a lowered op list (CPU)");
}
