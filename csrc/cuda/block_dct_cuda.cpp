// CUDA launcher of afd::block_dct (kernel: kernels/block_dct.cu).
#include "afd_cuda_launch.h"

namespace afd {
namespace cuda_launch {

at::Tensor block_dct_cuda(const at::Tensor& img) {
  check_image(img);
  AFD_CUDA_GUARD(img);
  const int64_t B = img.size(0), H = img.size(2), W = img.size(3);
  at::Tensor out =
      at::empty({B, kDctChannels, H / kBlock, W / kBlock}, img.options().memory_format(output_memory_format(img)));
  if (out.numel() == 0) return out;
  AFD_CUDA_CHECK(afd::cuda::launch_block_dct(img.data_ptr(), strides4(img), out.data_ptr(), strides4(out),
                                             to_int(B, "batch"), to_int(H, "height"), to_int(W, "width"),
                                             dtype_tag(img), AFD_CUDA_STREAM()));
  AFD_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace cuda_launch
}  // namespace afd

#ifndef AFD_EMU
TORCH_LIBRARY_IMPL(afd, CUDA, m) { m.impl("block_dct", &afd::cuda_launch::block_dct_cuda); }
#endif
