// afd::block_dct_gate on CUDA: the block DCT kernel (block_dct.cu), then |D|, the mean over blocks,
// the log and the 192-weight head as ATen reductions. The coefficients (as large as the float image)
// go to memory once; a kernel that reduces them in shared memory as block_dct_fdm's tiles do is the
// next step if the profile shows the gate (it runs once per image, before the FE-Net).
#include "afd_cuda_launch.h"

namespace afd {
namespace cuda_launch {

at::Tensor block_dct_cuda(const at::Tensor& img);  // block_dct_cuda.cpp

at::Tensor block_dct_gate_cuda(const at::Tensor& img, const at::Tensor& weight, const at::Tensor& bias) {
  check_image(img, /*uint8=*/true);
  check_gate_head(img, weight, bias);
  AFD_CUDA_GUARD(img);
  const at::ScalarType out_dtype = weight.scalar_type();
  const at::ScalarType cd = out_dtype == at::kDouble ? at::kDouble : at::kFloat;  // half types: float32
  const at::Tensor im = img.scalar_type() == cd ? img : img.to(cd);  // uint8 and half pixels: exact
  if (im.size(0) == 0) return at::empty({0}, weight.options());
  const at::Tensor stats = at::log(block_dct_cuda(im).abs().mean({2, 3}) + kGateEps);
  return at::linear(stats, weight.to(cd), bias.to(cd)).squeeze(1).to(out_dtype);
}

}  // namespace cuda_launch
}  // namespace afd

#ifndef AFD_EMU
TORCH_LIBRARY_IMPL(afd, CUDA, m) { m.impl("block_dct_gate", &afd::cuda_launch::block_dct_gate_cuda); }
#endif
