// Every source of the extension module cpixelcnn._C binds its own Python functions: it registers a
// binder here with a static cpixelcnn::Registration, and module.cpp calls every binder. A new
// sampler engine is its own unit (plus one Engine registration in cpixelcnn/sampling/engines.py); nothing
// else in csrc/ changes.
#pragma once

#include <torch/extension.h>

#include <vector>

namespace cpixelcnn {

using Binder = void (*)(pybind11::module&);

// One list for the whole module (an inline function's static is one object across translation units).
inline std::vector<Binder>& binders() {
  static std::vector<Binder> all;
  return all;
}

struct Registration {
  explicit Registration(Binder binder) { binders().push_back(binder); }
};

}  // namespace cpixelcnn
