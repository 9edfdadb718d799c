// Mixed precision at the op level, as torchvision's ops do (an Autocast kernel per op), instead of
// casts in module code. Under torch.autocast the conv-like ops run in autocast's lower-precision dtype
// (as aten::conv2d does): their floating inputs are cast to it (cached for weights that are leaves,
// like aten's; float64 and uint8 inputs are left alone: a uint8 image is read as it is). block_dct runs
// and block_dct_gate in float32 (the DCT feeds the gate's log statistics: fp32-list ops, like aten's log).
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace afd {
namespace {

template <c10::DeviceType kDevice>
at::ScalarType low() {
  return at::autocast::get_lower_precision_fp_from_device_type(kDevice);
}

template <c10::DeviceType kDevice>
c10::impl::ExcludeDispatchKeyGuard exclude_autocast() {
  return c10::impl::ExcludeDispatchKeyGuard(at::autocast::get_autocast_dispatch_key_from_device_type(kDevice));
}

template <typename T>
auto cast(at::ScalarType to, const T& arg, c10::DeviceType device) {
  return at::autocast::cached_cast(to, arg, device);
}

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

template <c10::DeviceType kDevice>
at::Tensor block_dct_autocast(const at::Tensor& img) {
  auto guard = exclude_autocast<kDevice>();
  static const auto handle = op<at::Tensor(const at::Tensor&)>("afd::block_dct");
  return handle.call(cast(at::kFloat, img, kDevice));
}

template <c10::DeviceType kDevice>
at::Tensor block_dct_gate_autocast(const at::Tensor& img, const at::Tensor& weight, const at::Tensor& bias) {
  auto guard = exclude_autocast<kDevice>();
  static const auto handle = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
      "afd::block_dct_gate");
  return handle.call(cast(at::kFloat, img, kDevice), cast(at::kFloat, weight, kDevice),
                     cast(at::kFloat, bias, kDevice));
}

// The gate logit is left as it is: the op scales the FDM by it in float32 whatever the FDM's dtype.
template <c10::DeviceType kDevice>
at::Tensor block_dct_fdm_autocast(const at::Tensor& img, const at::Tensor& w1, const at::Tensor& b1,
                                  const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& w3,
                                  const at::Tensor& b3, const c10::optional<at::Tensor>& gate) {
  auto guard = exclude_autocast<kDevice>();
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&);
  static const auto handle = op<Sig>("afd::block_dct_fdm");
  const at::ScalarType t = low<kDevice>();
  return handle.call(cast(t, img, kDevice), cast(t, w1, kDevice), cast(t, b1, kDevice), cast(t, w2, kDevice),
                     cast(t, b2, kDevice), cast(t, w3, kDevice), cast(t, b3, kDevice), gate);
}

template <c10::DeviceType kDevice>
at::Tensor fe_conv_autocast(const at::Tensor& x, const c10::optional<at::Tensor>& skip, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, const at::Tensor& alpha, bool pool) {
  auto guard = exclude_autocast<kDevice>();
  using Sig = at::Tensor(const at::Tensor&, const c10::optional<at::Tensor>&, const at::Tensor&,
                         const c10::optional<at::Tensor>&, const at::Tensor&, bool);
  static const auto handle = op<Sig>("afd::fe_conv");
  const at::ScalarType t = low<kDevice>();
  return handle.call(cast(t, x, kDevice), cast(t, skip, kDevice), cast(t, weight, kDevice), cast(t, bias, kDevice),
                     cast(t, alpha, kDevice), pool);
}

template <c10::DeviceType kDevice>
at::Tensor repconv_dedrift_autocast(const at::Tensor& x, const at::Tensor& weight,
                                    const c10::optional<at::Tensor>& bias, const at::Tensor& fdm,
                                    const at::Tensor& feat, c10::string_view act,
                                    const c10::optional<at::Tensor>& skip) {
  auto guard = exclude_autocast<kDevice>();
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&, const at::Tensor&,
                         const at::Tensor&, c10::string_view, const c10::optional<at::Tensor>&);
  static const auto handle = op<Sig>("afd::repconv_dedrift");
  const at::ScalarType t = low<kDevice>();
  return handle.call(cast(t, x, kDevice), cast(t, weight, kDevice), cast(t, bias, kDevice), cast(t, fdm, kDevice),
                     cast(t, feat, kDevice), act, cast(t, skip, kDevice));
}

template <c10::DeviceType kDevice>
void register_autocast(torch::Library& m) {
  m.impl("block_dct", &block_dct_autocast<kDevice>);
  m.impl("block_dct_gate", &block_dct_gate_autocast<kDevice>);
  m.impl("block_dct_fdm", &block_dct_fdm_autocast<kDevice>);
  m.impl("fe_conv", &fe_conv_autocast<kDevice>);
  m.impl("repconv_dedrift", &repconv_dedrift_autocast<kDevice>);
}

}  // namespace

TORCH_LIBRARY_IMPL(afd, AutocastCPU, m) { register_autocast<c10::DeviceType::CPU>(m); }
TORCH_LIBRARY_IMPL(afd, AutocastCUDA, m) { register_autocast<c10::DeviceType::CUDA>(m); }

}  // namespace afd
