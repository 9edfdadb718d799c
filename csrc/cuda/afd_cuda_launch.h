// Shared helpers of the CUDA launchers (csrc/cuda/*_cuda.cpp): device guard, current stream,
// dtype tag, strides, output memory format, device facts. Host code only (ATen).
//
// AFD_EMU (a CPU emulation harness that runs the kernels on the CPU for index-math checks)
// replaces the CUDA-runtime pieces with stand-ins; a normal build never defines it.
#pragma once
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#ifndef AFD_EMU
// c10-level CUDA headers only: ATen/cuda/CUDAContext.h pulls in cuBLAS/cuSPARSE headers, which a
// bare nvcc toolkit may lack. c10::cuda::getCurrentCUDAStream() is the stream
// at::cuda::getCurrentCUDAStream() returns.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <array>
#include <mutex>
#endif

#include "afd_checks.h"
#include "afd_cuda.cuh"

#ifndef AFD_EMU
#define AFD_CUDA_GUARD(t) const c10::cuda::CUDAGuard afd_device_guard_((t).device())
#define AFD_CUDA_STREAM() (c10::cuda::getCurrentCUDAStream().stream())
#define AFD_CUDA_CHECK(expr) C10_CUDA_CHECK(expr)
#define AFD_KERNEL_LAUNCH_CHECK() C10_CUDA_KERNEL_LAUNCH_CHECK()
#endif

namespace afd {
namespace cuda_launch {

using afd::cuda::DType;
using afd::cuda::DeviceInfo;
using afd::cuda::Strides4;

inline DType dtype_tag(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kDouble:
      return DType::kFloat64;
    default:
      TORCH_CHECK_TYPE(false, "afd CUDA kernels support float32, float64, float16 and bfloat16, got ",
                       t.scalar_type());
  }
}

inline Strides4 strides4(const at::Tensor& t) {
  Strides4 s{};
  for (int d = 0; d < 4; ++d) s.s[d] = t.stride(d);
  return s;
}

// output_memory_format(t) is afd::output_memory_format (csrc/afd_checks.h): the rule of
// python/checks.py that the fake kernels in afd_ext/ops.py follow.
using afd::output_memory_format;

inline bool aligned(const at::Tensor& t, std::uintptr_t bytes) {
  return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % bytes == 0;
}

inline int to_int(int64_t v, const char* what) {
  TORCH_CHECK_VALUE(v >= 0 && v <= 0x7fffffffLL, what, " = ", v, " is too large for the afd CUDA kernels");
  return static_cast<int>(v);
}

// AFD_CUDA_FORCE_GENERIC=1 makes the launchers skip the tensor-core kernels (for A/B checks).
inline bool force_generic() {
  const char* v = std::getenv("AFD_CUDA_FORCE_GENERIC");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

#ifndef AFD_EMU
// SM count and opt-in shared memory per block of the current device (cached per device).
inline DeviceInfo device_info() {
  constexpr int kMaxDevices = 64;
  static std::array<DeviceInfo, kMaxDevices> cache{};
  static std::array<std::once_flag, kMaxDevices> once;
  const int dev = c10::cuda::current_device();
  TORCH_CHECK(dev >= 0 && dev < kMaxDevices, "afd: CUDA device index ", dev, " out of range");
  std::call_once(once[dev], [dev] {
    int sms = 0, smem = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    cache[dev].num_sms = sms;
    cache[dev].max_smem_optin = static_cast<size_t>(smem);
  });
  return cache[dev];
}
#else
DeviceInfo device_info();  // supplied by the emulation harness
#endif

}  // namespace cuda_launch
}  // namespace afd
