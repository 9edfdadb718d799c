// CUDA launcher of afd::fe_conv (kernels: kernels/fe_conv.cu).
// float16/bfloat16 with a channels_last output, C <= 64, even channel counts (x and skip, or x
// alone, copied in pieces of 8, 4 or 2 channels; out likewise) and weights that fit in shared
// memory: the tensor-core kernel on x/skip made dense NHWC (a copy only when they are not);
// everything else (NCHW outputs included): the generic SIMT kernel on the tensors' own strides.
// With a skip, the conv reads cat(up2(x), skip) from x (at half resolution) and skip directly.
#include "afd_cuda_launch.h"

namespace afd {
namespace cuda_launch {

at::Tensor fe_conv_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& skip, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias, const at::Tensor& alpha, bool pool) {
  check_fe_conv(x, skip, weight, bias, alpha);
  AFD_CUDA_GUARD(x);
  const bool has_skip = skip.has_value() && skip->defined();
  const at::Tensor& full = has_skip ? *skip : x;  // the input at the conv's resolution
  const at::MemoryFormat fmt = output_memory_format(full);
  const int64_t B = full.size(0), H = full.size(2), W = full.size(3), C = weight.size(0);
  const int64_t Ho = pool ? half_size(H) : H, Wo = pool ? half_size(W) : W;
  at::Tensor out = at::empty({B, C, Ho, Wo}, x.options().memory_format(fmt));
  if (out.numel() == 0) return out;

  const at::Tensor wc = weight.contiguous();
  const at::Tensor ac = alpha.contiguous();
  at::Tensor bc;
  if (bias.has_value() && bias->defined()) bc = bias->contiguous();
  const DType dt = dtype_tag(x);
  const DeviceInfo dev = device_info();
  cudaStream_t stream = AFD_CUDA_STREAM();

  afd::cuda::FeConvProblem p{};
  p.weight = wc.data_ptr();
  p.bias = bc.defined() ? bc.data_ptr() : nullptr;
  p.alpha = ac.data_ptr();
  p.out = out.data_ptr();
  p.out_st = strides4(out);
  p.B = to_int(B, "batch");
  p.Cin = to_int(weight.size(1), "Cin");
  p.Cx = to_int(x.size(1), "Cx");
  p.C = to_int(C, "Cout");
  p.H = to_int(H, "height");
  p.W = to_int(W, "width");
  p.pool = pool ? 1 : 0;
  p.skip = has_skip ? skip->data_ptr() : nullptr;  // non-null marks the skip form (the MMA check reads it)

  if (!force_generic() && fmt == at::MemoryFormat::ChannelsLast && afd::cuda::fe_conv_mma_supported(p, dt, dev)) {
    const at::Tensor xx = x.contiguous(fmt);
    const at::Tensor ss = has_skip ? skip->contiguous(fmt) : at::Tensor();
    const int vin = has_skip ? afd::cuda::nhwc_vec(p.Cx, p.Cin - p.Cx) : afd::cuda::nhwc_vec(p.Cin, 0);
    const std::uintptr_t al_in = 2 * static_cast<std::uintptr_t>(vin);
    const std::uintptr_t al_out = 2 * static_cast<std::uintptr_t>(afd::cuda::nhwc_vec(p.C, 0));
    if (aligned(xx, al_in) && (!has_skip || aligned(ss, al_in)) && aligned(out, al_out)) {
      p.x = xx.data_ptr();
      p.x_st = strides4(xx);
      p.skip = has_skip ? ss.data_ptr() : nullptr;
      p.skip_st = has_skip ? strides4(ss) : Strides4{};
      AFD_CUDA_CHECK(afd::cuda::launch_fe_conv_mma(p, dt, dev, stream));
      AFD_KERNEL_LAUNCH_CHECK();
      return out;
    }
  }
  p.x = x.data_ptr();
  p.x_st = strides4(x);
  p.skip_st = has_skip ? strides4(*skip) : Strides4{};
  AFD_CUDA_CHECK(afd::cuda::launch_fe_conv_generic(p, dt, stream));
  AFD_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace cuda_launch
}  // namespace afd

#ifndef AFD_EMU
TORCH_LIBRARY_IMPL(afd, CUDA, m) { m.impl("fe_conv", &afd::cuda_launch::fe_conv_cuda); }
#endif
