// The CUDA cached sampler's host side, pure CUDA (no torch/ATen headers): nvcc compiles this
// translation unit with nothing but the CUDA toolkit, e.g. the PyPI nvidia-cuda-* packages of
// the gpu-check extra. The torch binding (csrc/cached_sampler_cuda_binding.cpp) turns tensors
// into a Plan and calls cached_sample_cuda_run.
//
// With use_graph the whole launch sequence is captured into one CUDA graph on a private stream
// and replayed once: ~10^5 launches are submitted together instead of one host call each.
#include <cuda_runtime.h>

#include "cached_sampler_cuda_api.h"
#include "cached_sampler_launch.h"

namespace cpixelcnn {
namespace cuda {

namespace {

struct CudaLaunch {
  cudaStream_t stream;
  cudaError_t* status;
  template <typename... Params, typename... Args>
  bool operator()(void (*kernel)(Params...), int blocks, int threads, Args&&... args) const {
    kernel<<<blocks, threads, 0, stream>>>(args...);
    *status = cudaGetLastError();
    return *status == cudaSuccess;
  }
};

template <typename T>
cudaError_t run_on(const Plan<T>& plan, cudaStream_t stream) {
  cudaError_t status = cudaSuccess;
  launch_steps(plan, CudaLaunch{stream, &status});
  return status;
}

#define CPIXELCNN_TRY(expr)               \
  do {                                    \
    const cudaError_t err_ = (expr);      \
    if (err_ != cudaSuccess) return err_; \
  } while (0)

template <typename T>
cudaError_t run_graph(const Plan<T>& plan, cudaStream_t caller) {
  // Capture needs a stream other than the legacy default one; the caller's work must be done
  // before the private stream reads the inputs.
  CPIXELCNN_TRY(cudaStreamSynchronize(caller));
  cudaStream_t stream = nullptr;
  CPIXELCNN_TRY(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaError_t status = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
  if (status == cudaSuccess) {
    const cudaError_t launched = run_on(plan, stream);
    status = cudaStreamEndCapture(stream, &graph);
    if (launched != cudaSuccess) status = launched;
  }
  if (status == cudaSuccess) status = cudaGraphInstantiate(&exec, graph, 0);
  if (status == cudaSuccess) status = cudaGraphLaunch(exec, stream);
  if (status == cudaSuccess) status = cudaStreamSynchronize(stream);
  if (exec) cudaGraphExecDestroy(exec);
  if (graph) cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  return status;
}

}  // namespace

template <typename T>
cudaError_t cached_sample_cuda_run(const Plan<T>& plan, cudaStream_t stream, bool use_graph) {
  return use_graph ? run_graph(plan, stream) : run_on(plan, stream);
}

template cudaError_t cached_sample_cuda_run<float>(const Plan<float>&, cudaStream_t, bool);
template cudaError_t cached_sample_cuda_run<double>(const Plan<double>&, cudaStream_t, bool);

}  // namespace cuda
}  // namespace cpixelcnn
