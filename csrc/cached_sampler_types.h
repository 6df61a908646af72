// The lowered model's types, shared by every engine of the cached sampler: the op vocabulary
// (op types, input modes, transforms, shifts — exported to Python by name, csrc/module.cpp) and
// the raw-pointer Plan that the CUDA kernels, their launch order and its CPU emulation run.
// Plain C++ with CPIXELCNN_HD, so g++ compiles it in the torch binding and nvcc in the kernels.
#pragma once

#include <cstdint>
#include <vector>

#include "sample_pixel.h"  // CPIXELCNN_HD

namespace cpixelcnn {
namespace lowered {

enum OpType : int { kConv = 0, kDeconv = 1, kAdd = 2, kGated = 3 };
enum InputMode : int { kSingle = 0, kConcat = 1, kSum = 2 };
enum Transform : int { kNone = 0, kElu = 1, kConcatElu = 2 };
enum Shift : int { kNoShift = 0, kShiftDown = 1, kShiftRight = 2 };

// One activation cache: B x H x W x C, channels innermost. (Passed to every kernel by value:
// a field here costs registers on the GPU, so what only the CPU engine needs lives in Plan.)
template <typename T>
struct DevNode {
  T* data;
  int c, h, w;
  CPIXELCNN_HD T* at(int b, int i, int j) const { return data + ((static_cast<int64_t>(b) * h + i) * w + j) * c; }
};

struct OpDesc {
  int type, mode, transform, kh, kw, stride, pad_top, pad_left, shift, cin_eff;
};

// One op of the lowered model (cpixelcnn/sampling/cached_sampler.py) with its per-step schedule.
template <typename T>
struct StepOp {
  OpDesc desc;
  int out, in0, in1;                      // node indices
  const T *weight, *bias, *gamma, *beta;  // device memory; gamma/beta may be null
  const int32_t* positions;               // device memory: positions sorted by step
  const int64_t* offsets;                 // host memory: H*W + 1 step offsets into positions
};

// Everything one sampling run needs, as raw pointers.
template <typename T>
struct Plan {
  std::vector<DevNode<T>> nodes;  // activation caches, device memory
  std::vector<int> node_rows;     // rows each node's tensor holds: its h, or 0 for a node the CPU engine holds itself
  std::vector<StepOp<T>> ops;
  int input_node, params_node, height, width, channels, bits, batch;
  int first_sampled;    // pixels before it (raster order) are given (image completion), not sampled
  double temperature;   // the sampling temperature (sample_pixel.h)
  const double* noise;  // device memory, (B, H, W, 1 + C)
};

}  // namespace lowered
}  // namespace cpixelcnn
