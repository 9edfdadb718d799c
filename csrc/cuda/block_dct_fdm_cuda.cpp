// CUDA launcher of afd::block_dct_fdm (kernels: kernels/block_dct_fdm.cu).
// float16/bfloat16 weights with h2 <= 128 that fit in shared memory: the tensor-core kernel (after
// a one-CTA-per-hidden-unit prologue that folds the colour transform + DCT into w1); its cp.async
// staging takes 16-bit pixels only (kernels/block_dct_fdm.cu (b)), so a uint8 image is first
// widened to the weights' dtype here: the cast the caller would otherwise make, never the slower
// SIMT path (staging uint8 in the kernel itself is the next step). Everything else: the generic
// SIMT kernel, which reads uint8 pixels directly and writes the weights' dtype.
#include "afd_cuda_launch.h"

namespace afd {
namespace cuda_launch {

at::Tensor block_dct_fdm_cuda(const at::Tensor& img, const at::Tensor& w1, const at::Tensor& b1,
                              const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& w3,
                              const at::Tensor& b3, const c10::optional<at::Tensor>& gate) {
  check_image(img, /*uint8=*/true);
  check_fde_weights(img, w1, b1, w2, b2, w3, b3);
  check_gate_logit(img, gate);
  AFD_CUDA_GUARD(img);
  const int64_t B = img.size(0), H = img.size(2), W = img.size(3);
  const int h1 = to_int(w1.size(0), "h1"), h2 = to_int(w2.size(0), "h2"), C = to_int(w3.size(0), "C");
  const at::MemoryFormat fmt = output_memory_format(img);
  // The weights' dtype: a floating img's own, and the output dtype for a uint8 img.
  const DType dt = dtype_tag(w1);
  const bool img_uint8 = img.scalar_type() == at::kByte;
  at::Tensor out =
      at::empty({B, C, H / kBlock, W / kBlock}, img.options().dtype(w1.scalar_type()).memory_format(fmt));
  if (out.numel() == 0) return out;

  const at::Tensor w1c = w1.contiguous(), b1c = b1.contiguous(), w2c = w2.contiguous(), b2c = b2.contiguous(),
                   w3c = w3.contiguous(), b3c = b3.contiguous();
  const DeviceInfo dev = device_info();
  cudaStream_t stream = AFD_CUDA_STREAM();
  const int Bi = to_int(B, "batch"), Hi = to_int(H, "height"), Wi = to_int(W, "width");
  TORCH_CHECK_VALUE(B * (H / kBlock) * (W / kBlock) < 0x7fff0000LL, "block_dct_fdm: too many 8x8 blocks (",
                    B * (H / kBlock) * (W / kBlock), ") for one call; split the batch");

  if (!force_generic() && afd::cuda::fdm_mma_supported(h1, h2, C, dt, dev)) {
    // Dense NCHW or NHWC image with a 16-byte aligned pointer (cp.async of 16-byte row pieces);
    // a uint8 one widened to the weights' dtype first (layout kept).
    at::Tensor im = img_uint8 ? img.to(w1.scalar_type()) : img;
    int nhwc = 0;
    if (im.is_contiguous()) {
      nhwc = 0;
    } else if (im.is_contiguous(at::MemoryFormat::ChannelsLast)) {
      nhwc = 1;
    } else {
      im = im.contiguous();
      nhwc = 0;
    }
    if (!aligned(im, 16))
      im = im.clone(nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
    const int h1p = afd::cuda::fdm_pad16(h1);
    at::Tensor w1f = at::empty({h1p, kDctChannels}, img.options().dtype(at::kHalf));  // float16 for both dtypes
    at::Tensor b1f = at::empty({h1p}, img.options().dtype(at::kFloat));
    AFD_CUDA_CHECK(afd::cuda::launch_fdm_fold_w1(w1c.data_ptr(), b1c.data_ptr(), h1, nhwc, w1f.data_ptr(),
                                                 b1f.data_ptr<float>(), dt, stream));
    AFD_KERNEL_LAUNCH_CHECK();
    AFD_CUDA_CHECK(afd::cuda::launch_block_dct_fdm_mma(im.data_ptr(), nhwc, w1f.data_ptr(), b1f.data_ptr<float>(),
                                                       w2c.data_ptr(), b2c.data_ptr(), w3c.data_ptr(),
                                                       b3c.data_ptr(), out.data_ptr(), strides4(out), Bi, Hi, Wi, h1,
                                                       h2, C, dt, dev, stream));
    AFD_KERNEL_LAUNCH_CHECK();
    apply_gate_(out, gate);  // one pass over the FDM, 64x smaller than the image (afd_checks.h)
    return out;
  }

  const size_t smem = afd::cuda::fdm_generic_smem_bytes(h1, h2, dt);
  TORCH_CHECK_VALUE(smem + 2048 <= dev.max_smem_optin, "block_dct_fdm (CUDA): hidden sizes h1=", h1, ", h2=", h2,
                    " need ", smem, " bytes of shared memory per block tile, more than this GPU's ",
                    dev.max_smem_optin, "; use smaller FDE-Net hidden layers (h1 + h2 up to about ",
                    (dev.max_smem_optin - 2048) / ((dt == DType::kFloat64 ? 17 : 33) * (dt == DType::kFloat64 ? 8 : 4)) - 192,
                    ")");
  AFD_CUDA_CHECK(afd::cuda::launch_block_dct_fdm_generic(
      img.data_ptr(), img_uint8, strides4(img), w1c.data_ptr(), b1c.data_ptr(), w2c.data_ptr(), b2c.data_ptr(),
      w3c.data_ptr(), b3c.data_ptr(), out.data_ptr(), strides4(out), Bi, Hi, Wi, h1, h2, C, dt, dev, stream));
  AFD_KERNEL_LAUNCH_CHECK();
  apply_gate_(out, gate);
  return out;
}

}  // namespace cuda_launch
}  // namespace afd

#ifndef AFD_EMU
TORCH_LIBRARY_IMPL(afd, CUDA, m) { m.impl("block_dct_fdm", &afd::cuda_launch::block_dct_fdm_cuda); }
#endif
