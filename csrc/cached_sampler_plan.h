// Tensors -> raw pointers for the cached samplers. The lowered model arrives from
// cpixelcnn/sampling/cached_sampler.py as tensors (op_spec rows, weights, schedule); every engine (the CPU loop,
// the CUDA launcher and its CPU emulation) checks them here, once, the same way.
#pragma once

#include <torch/extension.h>

#include <cmath>
#include <vector>

#include "cached_sampler_types.h"

namespace cpixelcnn {

// op_spec columns. Python writes them by name: csrc/module.cpp exports kSpecColumns (as
// SPEC_COLUMNS) and the op vocabulary, so neither side can reorder them without the other.
enum SpecCol { cType, cOut, cIn0, cIn1, cMode, cTransform, cKh, cKw, cStride, cPadTop, cPadLeft, cShift, cCinEff, cCols };
inline constexpr const char* kSpecColumns[] = {"type", "out", "in0", "in1", "mode", "transform", "kh", "kw", "stride", "pad_top", "pad_left", "shift", "cin_eff"};
static_assert(sizeof(kSpecColumns) / sizeof(kSpecColumns[0]) == cCols, "one name per op_spec column");

// Everything a sampling run takes, for every engine (bound to Python as _C.SamplerInputs, filled by name).
struct SamplerInputs {
  std::vector<torch::Tensor> nodes;  // one (B, H, W, C) cache per node; the input node pre-filled
  std::vector<int64_t> node_heights;  // every node's full height (the CPU engine holds a node given with 0 rows itself)
  torch::Tensor op_spec;             // (n_ops, cCols) int64, on the CPU
  std::vector<torch::Tensor> weights, biases, gammas, betas;  // per op; empty tensors where unused
  std::vector<torch::Tensor> positions;                       // per op, int32, on the nodes' device
  std::vector<torch::Tensor> offsets;                         // per op, int64 (H*W + 1), on the CPU
  int64_t input_node = 0, params_node = 0, height = 0, width = 0, channels = 0, bits = 8;
  torch::Tensor noise;    // (B, H, W, 1 + C) float64, on the nodes' device
  int64_t first_sampled = 0;  // pixels before it are given (pre-filled in the input node), not sampled
  double temperature = 1.0;   // the sampling temperature (sample_pixel.h)
  bool use_graph = true;  // CUDA engine: capture the whole launch sequence into one CUDA graph
};

// Throws (a Python RuntimeError) naming the first input that does not fit.
inline void check_sampler_inputs(const SamplerInputs& in, c10::DeviceType device) {
  const auto& spec = in.op_spec;
  TORCH_CHECK(spec.device().is_cpu() && spec.dtype() == torch::kInt64 && spec.dim() == 2 && spec.size(1) == cCols && spec.is_contiguous(),
              "op_spec must be a contiguous CPU int64 (n_ops, ", static_cast<int>(cCols), ") tensor");
  const int64_t n_ops = spec.size(0);
  for (const auto* v : {&in.weights, &in.biases, &in.gammas, &in.betas, &in.positions, &in.offsets})
    TORCH_CHECK(static_cast<int64_t>(v->size()) == n_ops, "one weight, bias, gamma, beta and schedule per op");
  const int64_t n_nodes = static_cast<int64_t>(in.nodes.size());
  TORCH_CHECK(static_cast<int64_t>(in.node_heights.size()) == n_nodes, "one height per node");
  TORCH_CHECK(n_nodes > 0 && in.input_node >= 0 && in.input_node < n_nodes && in.params_node >= 0 && in.params_node < n_nodes, "bad node ids");
  TORCH_CHECK(in.channels == 1 || in.channels == 3, "channels must be 1 or 3");
  TORCH_CHECK(std::isfinite(in.temperature) && in.temperature > 0, "temperature must be a finite number > 0");
  TORCH_CHECK(in.first_sampled >= 0 && in.first_sampled <= in.height * in.width, "first_sampled must be in [0, H*W]");
  const auto& first = in.nodes[0];
  const int64_t batch = first.size(0);
  for (const auto& n : in.nodes)
    TORCH_CHECK(n.device().type() == device && n.scalar_type() == first.scalar_type() && n.is_contiguous() && n.dim() == 4 && n.size(0) == batch,
                "nodes must be contiguous (B, H, W, C) tensors of one dtype on the ", c10::DeviceTypeName(device), " device");
  TORCH_CHECK(in.noise.device().type() == device && in.noise.dtype() == torch::kFloat64 && in.noise.is_contiguous() && in.noise.dim() == 4 &&
                  in.noise.size(0) == batch && in.noise.size(1) == in.height && in.noise.size(2) == in.width && in.noise.size(3) == 1 + in.channels,
              "noise must be contiguous float64 (B, H, W, 1 + C) on the nodes' device");
  for (int64_t op = 0; op < n_ops; ++op) {
    const int64_t* s = spec.data_ptr<int64_t>() + op * cCols;
    for (int64_t k : {s[cOut], s[cIn0], s[cIn1]}) TORCH_CHECK(k >= 0 && k < n_nodes, "op ", op, " names a missing node");
    const auto& off = in.offsets[op];
    TORCH_CHECK(off.device().is_cpu() && off.dtype() == torch::kInt64 && off.is_contiguous() && off.numel() == in.height * in.width + 1,
                "schedule offsets of op ", op, " must be contiguous CPU int64 with H*W+1 entries");
    const auto& pos = in.positions[op];
    TORCH_CHECK(pos.device().type() == device && pos.dtype() == torch::kInt32 && pos.is_contiguous() && pos.numel() >= off.data_ptr<int64_t>()[off.numel() - 1],
                "schedule positions of op ", op, " must be contiguous int32 on the nodes' device, one per scheduled position");
    for (const auto* t : {&in.weights[op], &in.biases[op], &in.gammas[op], &in.betas[op]})
      TORCH_CHECK(!t->defined() || t->numel() == 0 || (t->scalar_type() == first.scalar_type() && t->is_contiguous() && t->device().type() == device),
                  "op ", op, ": parameters must be contiguous, of the nodes' dtype and on their device");
    if (s[cType] == lowered::kConv || s[cType] == lowered::kDeconv) {
      const int64_t cin = s[cType] == lowered::kConv ? s[cCinEff] : in.nodes[s[cIn0]].size(3);
      const int64_t cout = in.nodes[s[cOut]].size(3);
      TORCH_CHECK(in.weights[op].numel() == s[cKh] * s[cKw] * cin * cout && in.biases[op].numel() == cout, "op ", op, ": weight shape does not fit");
    }
  }
}

template <typename T>
const T* data_or_null(const torch::Tensor& t) {
  return (t.defined() && t.numel()) ? t.data_ptr<T>() : nullptr;
}

// The checked inputs as a lowered::Plan (pointers into the tensors, which must outlive it): what every engine consumes.
template <typename T>
lowered::Plan<T> make_plan(const SamplerInputs& in) {
  lowered::Plan<T> plan;
  for (size_t k = 0; k < in.nodes.size(); ++k) {
    const auto& n = in.nodes[k];
    plan.nodes.push_back({n.data_ptr<T>(), static_cast<int>(n.size(3)), static_cast<int>(in.node_heights[k]), static_cast<int>(n.size(2))});
    plan.node_rows.push_back(static_cast<int>(n.size(1)));
  }
  for (int64_t op = 0; op < in.op_spec.size(0); ++op) {
    const int64_t* s = in.op_spec.data_ptr<int64_t>() + op * cCols;
    const lowered::OpDesc desc{static_cast<int>(s[cType]), static_cast<int>(s[cMode]), static_cast<int>(s[cTransform]), static_cast<int>(s[cKh]),
                            static_cast<int>(s[cKw]), static_cast<int>(s[cStride]), static_cast<int>(s[cPadTop]), static_cast<int>(s[cPadLeft]),
                            static_cast<int>(s[cShift]), static_cast<int>(s[cCinEff])};
    plan.ops.push_back({desc, static_cast<int>(s[cOut]), static_cast<int>(s[cIn0]), static_cast<int>(s[cIn1]), data_or_null<T>(in.weights[op]),
                        data_or_null<T>(in.biases[op]), data_or_null<T>(in.gammas[op]), data_or_null<T>(in.betas[op]),
                        in.positions[op].data_ptr<int32_t>(), in.offsets[op].data_ptr<int64_t>()});
  }
  plan.input_node = static_cast<int>(in.input_node);
  plan.params_node = static_cast<int>(in.params_node);
  plan.height = static_cast<int>(in.height);
  plan.width = static_cast<int>(in.width);
  plan.channels = static_cast<int>(in.channels);
  plan.bits = static_cast<int>(in.bits);
  plan.batch = static_cast<int>(in.nodes[0].size(0));
  plan.first_sampled = static_cast<int>(in.first_sampled);
  plan.temperature = in.temperature;
  plan.noise = in.noise.data_ptr<double>();
  return plan;
}

}  // namespace cpixelcnn
