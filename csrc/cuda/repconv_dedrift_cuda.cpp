// CUDA launcher of afd::repconv_dedrift (kernels: kernels/repconv_dedrift.cu).
// float16/bfloat16 with C <= 64 and weights that fit in shared memory: the tensor-core kernel on
// x/skip/feat in feat's memory format (NHWC needs even channel counts: x and skip (or x alone) are
// copied in pieces of 8, 4 or 2 channels, feat/out likewise; NCHW needs an even width); everything
// else: the generic SIMT kernel on the tensors' own strides. With a skip, the conv reads
// cat(up2(x), skip) from x (at half resolution) and skip directly.
#include "afd_cuda_launch.h"

namespace afd {
namespace cuda_launch {

at::Tensor repconv_dedrift_cuda(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                const at::Tensor& fdm, const at::Tensor& feat, c10::string_view act,
                                const c10::optional<at::Tensor>& skip) {
  check_repconv_dedrift(x, weight, bias, fdm, feat, skip);
  const Act act_code = parse_act(act);
  AFD_CUDA_GUARD(x);
  const at::MemoryFormat fmt = output_memory_format(feat);
  at::Tensor out = at::empty(feat.sizes(), feat.options().memory_format(fmt));
  if (out.numel() == 0) return out;

  const at::Tensor wc = weight.contiguous();
  at::Tensor bc;
  if (bias.has_value() && bias->defined()) bc = bias->contiguous();
  const DType dt = dtype_tag(x);
  const DeviceInfo dev = device_info();
  cudaStream_t stream = AFD_CUDA_STREAM();

  afd::cuda::RepconvProblem p{};
  p.weight = wc.data_ptr();
  p.bias = bc.defined() ? bc.data_ptr() : nullptr;
  p.fdm = fdm.data_ptr();
  p.fdm_st = strides4(fdm);
  p.out = out.data_ptr();
  p.out_st = strides4(out);
  const bool has_skip = skip.has_value() && skip->defined();
  p.B = to_int(feat.size(0), "batch");
  p.Cin = to_int(weight.size(1), "Cin");
  p.Cx = to_int(x.size(1), "Cx");
  p.C = to_int(weight.size(0), "C");
  p.Hf = to_int(feat.size(2), "height");
  p.Wf = to_int(feat.size(3), "width");
  p.Hb = to_int(fdm.size(2), "fdm height");
  p.Wb = to_int(fdm.size(3), "fdm width");
  p.act = static_cast<int>(act_code);

  const int nhwc = fmt == at::MemoryFormat::ChannelsLast ? 1 : 0;
  p.skip = has_skip ? skip->data_ptr() : nullptr;  // non-null marks the skip form (the MMA check reads it)
  if (!force_generic() && afd::cuda::repconv_mma_supported(p, nhwc, dt, dev)) {
    const at::Tensor xx = x.contiguous(fmt), ff = feat.contiguous(fmt);
    const at::Tensor ss = has_skip ? skip->contiguous(fmt) : at::Tensor();
    const int vin = has_skip ? afd::cuda::nhwc_vec(p.Cx, p.Cin - p.Cx) : afd::cuda::nhwc_vec(p.Cin, 0);
    const std::uintptr_t al_in = nhwc ? 2 * static_cast<std::uintptr_t>(vin) : 4;
    const std::uintptr_t al_out = nhwc ? 2 * static_cast<std::uintptr_t>(afd::cuda::nhwc_vec(p.C, 0)) : 4;
    if (aligned(xx, al_in) && (!has_skip || aligned(ss, al_in)) && aligned(ff, al_out) && aligned(out, al_out)) {
      p.x = xx.data_ptr();
      p.x_st = strides4(xx);
      p.skip = has_skip ? ss.data_ptr() : nullptr;
      p.skip_st = has_skip ? strides4(ss) : Strides4{};
      p.feat = ff.data_ptr();
      p.feat_st = strides4(ff);
      AFD_CUDA_CHECK(afd::cuda::launch_repconv_dedrift_mma(p, nhwc, dt, dev, stream));
      AFD_KERNEL_LAUNCH_CHECK();
      return out;
    }
  }
  p.x = x.data_ptr();
  p.x_st = strides4(x);
  p.skip = has_skip ? skip->data_ptr() : nullptr;
  p.skip_st = has_skip ? strides4(*skip) : Strides4{};
  p.feat = feat.data_ptr();
  p.feat_st = strides4(feat);
  AFD_CUDA_CHECK(afd::cuda::launch_repconv_dedrift_generic(p, dt, stream));
  AFD_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace cuda_launch
}  // namespace afd

#ifndef AFD_EMU
TORCH_LIBRARY_IMPL(afd, CUDA, m) { m.impl("repconv_dedrift", &afd::cuda_launch::repconv_dedrift_cuda); }
#endif
