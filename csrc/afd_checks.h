// Argument checks shared by the C++ and CUDA launchers. Same exception types and
// wording as python/checks.py: ValueError for shapes and devices, TypeError for dtypes.
// They carry the ops' shape contract (python/functional.py): empty outputs are allowed (every
// launcher returns them before touching data), layers over no inputs (Cin, h1, h2 = 0) are not.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <array>
#include <string>
#include <utility>

#include "afd_constants.h"

namespace afd {

// The memory format of every op's output (python/checks.py output_memory_format): channels_last when
// the reference input is channels_last and not also plainly contiguous, else contiguous.
inline at::MemoryFormat output_memory_format(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast)
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_float(const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(is_supported_float(t.scalar_type()), name,
                   " must be a floating tensor (float32, float64, float16 or bfloat16), got ", t.scalar_type());
}

// (B, 3, H, W), H and W multiples of 8; floating, or also uint8 where the op takes it (uint8 = true:
// block_dct_fdm, whose compute dtype is then w1's; check_fde_weights).
inline void check_image(const at::Tensor& img, bool uint8 = false) {
  const at::ScalarType t = img.scalar_type();
  TORCH_CHECK_TYPE(!uint8 || t == at::kByte || is_supported_float(t),
                   "img must be uint8 or a floating tensor (float32, float64, float16 or bfloat16) of w1's dtype, "
                   "got ", t);
  if (!(uint8 && t == at::kByte)) check_float("img", img);
  TORCH_CHECK_VALUE(img.dim() == 4 && img.size(1) == 3,
                    "img must have shape (B, 3, H, W) (RGB, 0..255), got ", img.sizes());
  TORCH_CHECK_VALUE(img.size(2) % kBlock == 0 && img.size(3) % kBlock == 0,
                    "img height and width must be multiples of 8, got ", img.size(2), "x", img.size(3));
}

inline void check_dtype(const char* name, const at::Tensor& t, const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " has dtype ", t.scalar_type(), " but ", ref_name,
                   " has dtype ", ref.scalar_type(), "; they must match");
}

inline void check_device(const char* name, const at::Tensor& t, const char* ref_name, const at::Tensor& ref) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name, " is on ",
                    ref.device(), "; they must be on one device");
}

inline void check_same(const char* name, const at::Tensor& t, const char* ref_name, const at::Tensor& ref) {
  check_float(name, t);
  check_dtype(name, t, ref_name, ref);
  check_device(name, t, ref_name, ref);
}

// The FDE weights of block_dct_fdm (after check_image(img, true)): floating, all of img's dtype (a
// floating img) or all of w1's (a uint8 img), all on img's device. So w1's dtype is the op's compute
// and output dtype either way.
inline void check_fde_weights(const at::Tensor& img, const at::Tensor& w1, const at::Tensor& b1,
                              const at::Tensor& w2, const at::Tensor& b2, const at::Tensor& w3,
                              const at::Tensor& b3) {
  const bool uint8 = img.scalar_type() == at::kByte;
  const char* dtype_ref_name = uint8 ? "w1" : "img";
  const at::Tensor& dtype_ref = uint8 ? w1 : img;
  const std::pair<const char*, const at::Tensor*> weights[] = {{"w1", &w1}, {"b1", &b1}, {"w2", &w2},
                                                                {"b2", &b2}, {"w3", &w3}, {"b3", &b3}};
  for (const auto& [name, t] : weights) {
    check_float(name, *t);
    check_dtype(name, *t, dtype_ref_name, dtype_ref);
    check_device(name, *t, "img", img);
  }
  TORCH_CHECK_VALUE(w1.dim() == 2 && w1.size(1) == kDctChannels, "w1 must have shape (h1, 192), got ", w1.sizes());
  const int64_t h1 = w1.size(0);
  TORCH_CHECK_VALUE(h1 > 0, "w1 must have at least one row (h1 >= 1; a layer over no inputs is not defined), got ",
                    w1.sizes());
  TORCH_CHECK_VALUE(b1.dim() == 1 && b1.size(0) == h1, "b1 must have shape (", h1, "), got ", b1.sizes());
  TORCH_CHECK_VALUE(w2.dim() == 2 && w2.size(1) == h1, "w2 must have shape (h2, ", h1, "), got ", w2.sizes());
  const int64_t h2 = w2.size(0);
  TORCH_CHECK_VALUE(h2 > 0, "w2 must have at least one row (h2 >= 1; a layer over no inputs is not defined), got ",
                    w2.sizes());
  TORCH_CHECK_VALUE(b2.dim() == 1 && b2.size(0) == h2, "b2 must have shape (", h2, "), got ", b2.sizes());
  TORCH_CHECK_VALUE(w3.dim() == 2 && w3.size(1) == h2, "w3 must have shape (C, ", h2, "), got ", w3.sizes());
  TORCH_CHECK_VALUE(b3.dim() == 1 && b3.size(0) == w3.size(0), "b3 must have shape (", w3.size(0), "), got ",
                    b3.sizes());
}

// block_dct_gate's head (python/checks.py check_gate_head): weight (1, 192), bias (1,), floating, one
// dtype, on img's device.
inline void check_gate_head(const at::Tensor& img, const at::Tensor& weight, const at::Tensor& bias) {
  check_float("weight", weight);
  check_device("weight", weight, "img", img);
  TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(0) == 1 && weight.size(1) == kDctChannels,
                    "weight must have shape (1, 192), got ", weight.sizes());
  check_same("bias", bias, "weight", weight);
  TORCH_CHECK_VALUE(bias.dim() == 1 && bias.size(0) == 1, "bias must have shape (1,), got ", bias.sizes());
}

// block_dct_fdm's optional gate (python/checks.py check_gate_logit): one logit per image, (B,).
inline void check_gate_logit(const at::Tensor& img, const c10::optional<at::Tensor>& gate) {
  if (!gate.has_value()) return;
  check_float("gate", *gate);
  check_device("gate", *gate, "img", img);
  TORCH_CHECK_VALUE(gate->dim() == 1 && gate->size(0) == img.size(0), "gate must have shape (", img.size(0),
                    ",), got ", gate->sizes());
}

// fdm *= relu(tanh(gate / 2)) per image, computed in float32 (float64 for a float64 fdm): the gate of
// python/functional.py block_dct_fdm, applied by every compiled launcher to its (small) FDM in place.
inline void apply_gate_(at::Tensor& fdm, const c10::optional<at::Tensor>& gate) {
  if (!gate.has_value() || fdm.numel() == 0) return;
  const at::ScalarType cd = fdm.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor g = at::relu(at::tanh(gate->to(cd) * 0.5)).view({-1, 1, 1, 1});
  if (fdm.scalar_type() == cd)
    fdm.mul_(g);
  else
    fdm.copy_(fdm.to(cd).mul_(g));
}

inline Act parse_act(c10::string_view act) {
  if (act == "relu") return Act::kRelu;
  if (act == "relu6") return Act::kRelu6;
  TORCH_CHECK_VALUE(act == "identity", "act must be one of ('relu', 'relu6', 'identity'), got '", std::string(act),
                    "'");
  return Act::kIdentity;
}

// An FDM axis of `cells` tiles a feature axis of `pixels` (python/checks.py grid_divides).
inline bool grid_divides(int64_t cells, int64_t pixels) { return cells > 0 ? pixels % cells == 0 : pixels == 0; }

// ceil(n / 2): a 2x2 max-pool's output size (ceil mode), and the coarse size a skip of n takes.
inline int64_t half_size(int64_t n) { return (n + 1) / 2; }

// The input of an FE-Net 3x3 conv (python/checks.py check_conv_input): x alone, or cat(up2(x), skip)
// with x at the skip's coarse size ceil(H/2) x ceil(W/2). Returns {B, Cin, H, W} of that input.
inline std::array<int64_t, 4> check_conv_input(const at::Tensor& x, const c10::optional<at::Tensor>& skip,
                                               const char* size = "H, W") {
  check_float("x", x);
  if (!skip.has_value()) {
    TORCH_CHECK_VALUE(x.dim() == 4, "x must have shape (B, Cin, ", size, "), got ", x.sizes());
    TORCH_CHECK_VALUE(x.size(1) > 0, "x must have at least one channel (Cin >= 1; a conv over no input channels "
                      "is not defined), got ", x.sizes());
    return {x.size(0), x.size(1), x.size(2), x.size(3)};
  }
  const at::Tensor& s = *skip;
  check_same("skip", s, "x", x);
  TORCH_CHECK_VALUE(s.dim() == 4, "skip must have shape (B, Cs, ", size, "), got ", s.sizes());
  const int64_t B = s.size(0), H = s.size(2), W = s.size(3);
  TORCH_CHECK_VALUE(x.dim() == 4 && x.size(0) == B && x.size(2) == half_size(H) && x.size(3) == half_size(W),
                    "x must have shape (", B, ", Cx, ", half_size(H), ", ", half_size(W), ") for a skip of shape ",
                    s.sizes(), " (ceil(H/2) x ceil(W/2): it is upsampled 2x to the skip's size), got ", x.sizes());
  TORCH_CHECK_VALUE(x.size(1) > 0 && s.size(1) > 0, "x and skip must have at least one channel each, got ",
                    x.sizes(), " and ", s.sizes());
  return {B, x.size(1) + s.size(1), H, W};
}

inline void check_fe_conv(const at::Tensor& x, const c10::optional<at::Tensor>& skip, const at::Tensor& weight,
                          const c10::optional<at::Tensor>& bias, const at::Tensor& alpha) {
  const int64_t Cin = check_conv_input(x, skip)[1];
  check_same("weight", weight, "x", x);
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(1) == Cin && weight.size(2) == 3 && weight.size(3) == 3,
                    "weight must have shape (Cout, ", Cin, ", 3, 3), got ", weight.sizes());
  const int64_t C = weight.size(0);
  if (bias.has_value()) {
    check_same("bias", *bias, "x", x);
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == C, "bias must have shape (", C, "), got ",
                      bias->sizes());
  }
  check_same("alpha", alpha, "x", x);
  TORCH_CHECK_VALUE(alpha.dim() == 1 && alpha.size(0) == C, "alpha must have shape (", C, "), got ", alpha.sizes());
}

inline void check_repconv_dedrift(const at::Tensor& x, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias, const at::Tensor& fdm,
                                  const at::Tensor& feat, const c10::optional<at::Tensor>& skip = c10::nullopt) {
  const auto [B, Cin, Hf, Wf] = check_conv_input(x, skip, "Hf, Wf");
  check_same("weight", weight, "x", x);
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(1) == Cin && weight.size(2) == 3 && weight.size(3) == 3,
                    "weight must have shape (C, ", Cin, ", 3, 3), got ", weight.sizes());
  const int64_t C = weight.size(0);
  if (bias.has_value()) {
    check_same("bias", *bias, "x", x);
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == C, "bias must have shape (", C, "), got ",
                      bias->sizes());
  }
  check_same("feat", feat, "x", x);
  TORCH_CHECK_VALUE(feat.dim() == 4 && feat.size(0) == B && feat.size(1) == C && feat.size(2) == Hf &&
                        feat.size(3) == Wf,
                    "feat must have shape (", B, ", ", C, ", ", Hf, ", ", Wf, "), got ", feat.sizes());
  check_same("fdm", fdm, "x", x);
  TORCH_CHECK_VALUE(fdm.dim() == 4 && fdm.size(0) == B && fdm.size(1) == C, "fdm must have shape (", B, ", ", C,
                    ", Hb, Wb), got ", fdm.sizes());
  const int64_t Hb = fdm.size(2), Wb = fdm.size(3);
  TORCH_CHECK_VALUE(grid_divides(Hb, Hf) && grid_divides(Wb, Wf), "fdm grid ", Hb, "x", Wb,
                    " must divide the feature grid ", Hf, "x", Wf, " (Hf % Hb == Wf % Wb == 0)");
}

}  // namespace afd
