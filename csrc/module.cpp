// The extension module cpixelcnn._C: one PYBIND11_MODULE that calls the binder every source
// registered (registry.h). It also owns the cached sampler's interface: the SamplerInputs struct
// every engine takes, and the op vocabulary and op_spec column names, which Python reads instead
// of restating.
#include <torch/extension.h>

#include "cached_sampler_plan.h"
#include "registry.h"

namespace {

using cpixelcnn::SamplerInputs;
namespace lowered = cpixelcnn::lowered;

void register_sampler_interface(pybind11::module& m) {
  pybind11::class_<SamplerInputs>(m, "SamplerInputs", "Everything a cached sampling run takes (every engine); fields by name")
      .def(pybind11::init<>())
      .def_readwrite("nodes", &SamplerInputs::nodes)
      .def_readwrite("node_heights", &SamplerInputs::node_heights)
      .def_readwrite("op_spec", &SamplerInputs::op_spec)
      .def_readwrite("weights", &SamplerInputs::weights)
      .def_readwrite("biases", &SamplerInputs::biases)
      .def_readwrite("gammas", &SamplerInputs::gammas)
      .def_readwrite("betas", &SamplerInputs::betas)
      .def_readwrite("positions", &SamplerInputs::positions)
      .def_readwrite("offsets", &SamplerInputs::offsets)
      .def_readwrite("input_node", &SamplerInputs::input_node)
      .def_readwrite("params_node", &SamplerInputs::params_node)
      .def_readwrite("height", &SamplerInputs::height)
      .def_readwrite("width", &SamplerInputs::width)
      .def_readwrite("channels", &SamplerInputs::channels)
      .def_readwrite("bits", &SamplerInputs::bits)
      .def_readwrite("noise", &SamplerInputs::noise)
      .def_readwrite("first_sampled", &SamplerInputs::first_sampled)
      .def_readwrite("temperature", &SamplerInputs::temperature)
      .def_readwrite("use_graph", &SamplerInputs::use_graph);
  pybind11::tuple columns(static_cast<size_t>(cpixelcnn::cCols));
  for (int k = 0; k < cpixelcnn::cCols; ++k) columns[k] = cpixelcnn::kSpecColumns[k];
  m.attr("SPEC_COLUMNS") = columns;
  pybind11::dict op_types, modes, transforms, shifts;
  op_types["conv"] = static_cast<int>(lowered::kConv);
  op_types["deconv"] = static_cast<int>(lowered::kDeconv);
  op_types["add"] = static_cast<int>(lowered::kAdd);
  op_types["gated"] = static_cast<int>(lowered::kGated);
  modes["single"] = static_cast<int>(lowered::kSingle);
  modes["concat"] = static_cast<int>(lowered::kConcat);
  modes["sum"] = static_cast<int>(lowered::kSum);
  transforms["none"] = static_cast<int>(lowered::kNone);
  transforms["elu"] = static_cast<int>(lowered::kElu);
  transforms["concat_elu"] = static_cast<int>(lowered::kConcatElu);
  shifts["none"] = static_cast<int>(lowered::kNoShift);
  shifts["down"] = static_cast<int>(lowered::kShiftDown);
  shifts["right"] = static_cast<int>(lowered::kShiftRight);
  m.attr("OP_TYPES") = op_types;
  m.attr("INPUT_MODES") = modes;
  m.attr("TRANSFORMS") = transforms;
  m.attr("SHIFTS") = shifts;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "cpixelcnn compiled kernels (CPU; CUDA when built with CPIXELCNN_WITH_CUDA)";
  register_sampler_interface(m);
  for (const cpixelcnn::Binder bind : cpixelcnn::binders()) bind(m);
}
