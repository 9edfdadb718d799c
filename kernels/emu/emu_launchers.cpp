// The CUDA launchers (csrc/cuda/*_cuda.cpp) built for CPU tensors against the emulated kernels,
// registered as torch.ops.afd_emu.* (see kernels/emu/check.py).
#include <ATen/ATen.h>
#include <torch/library.h>
#define AFD_CUDA_GUARD(t) (void)0
#define AFD_CUDA_STREAM() ((cudaStream_t) nullptr)
#define AFD_CUDA_CHECK(expr) do { cudaError_t e_ = (expr); TORCH_CHECK(e_ == cudaSuccess, "emu: launch returned ", (int)e_); } while (0)
#define AFD_KERNEL_LAUNCH_CHECK() (void)0
#include "../../csrc/cuda/afd_cuda_launch.h"
#include "../../csrc/afd_schemas.h"
namespace afd { namespace cuda_launch {
int g_emu_sms = 2;
DeviceInfo device_info() { DeviceInfo d{}; d.num_sms = g_emu_sms; d.max_smem_optin = 232448; return d; }
}}
#include "../../csrc/cuda/block_dct_cuda.cpp"
#include "../../csrc/cuda/block_dct_fdm_cuda.cpp"
#include "../../csrc/cuda/block_dct_gate_cuda.cpp"
#include "../../csrc/cuda/repconv_dedrift_cuda.cpp"
#include "../../csrc/cuda/fe_conv_cuda.cpp"
TORCH_LIBRARY(afd_emu, m) {
  m.def(AFD_SCHEMA_BLOCK_DCT);
  m.def(AFD_SCHEMA_BLOCK_DCT_GATE);
  m.def(AFD_SCHEMA_BLOCK_DCT_FDM);
  m.def(AFD_SCHEMA_REPCONV_DEDRIFT);
  m.def(AFD_SCHEMA_FE_CONV);
  m.def("set_sms(int n) -> ()");
  m.def("last_dyn_smem() -> int");
}
static void set_sms(int64_t n) { afd::cuda_launch::g_emu_sms = (int)n; }
TORCH_LIBRARY_IMPL(afd_emu, CPU, m) {
  m.impl("block_dct", &afd::cuda_launch::block_dct_cuda);
  m.impl("block_dct_gate", &afd::cuda_launch::block_dct_gate_cuda);
  m.impl("block_dct_fdm", &afd::cuda_launch::block_dct_fdm_cuda);
  m.impl("repconv_dedrift", &afd::cuda_launch::repconv_dedrift_cuda);
  m.impl("fe_conv", &afd::cuda_launch::fe_conv_cuda);
}
static int64_t last_dyn_smem() { return (int64_t)afd_emu::g_last_dyn_smem; }
TORCH_LIBRARY_IMPL(afd_emu, CatchAll, m) {
  m.impl("set_sms", &set_sms);
  m.impl("last_dyn_smem", &last_dyn_smem);
}
