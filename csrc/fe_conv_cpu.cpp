// afd::fe_conv on CPU: one deployed FE-Net block, maxpool2x2?(prelu(conv3x3(u) + bias)).
// u = x, or the decoder's cat(up2(x), skip) written in one pass (conv_input_cpu.h); the conv (with
// its bias) runs in oneDNN through at::conv2d; one pass over its output then applies PReLU, in place,
// or PReLU and the 2x2 max-pool together into the (4x smaller) result. No PReLU'd, upsampled or
// concatenated tensor is made by an ATen op, and the profiler sees one operator per block.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "afd_checks.h"
#include "conv_input_cpu.h"

namespace afd {
namespace {

constexpr int64_t kGrainElements = 32768;  // values per parallel work item, at least

// PReLU as torch computes it: v > 0 ? v : a * v (NaN stays NaN).
template <typename scalar_t>
inline scalar_t prelu(scalar_t v, scalar_t a) {
  return v > scalar_t(0) ? v : a * v;
}

// max as torch's max_pool2d takes it: a NaN wins and stays.
template <typename scalar_t>
inline scalar_t max_nan(scalar_t m, scalar_t v) {
  return (v > m || std::isnan(v)) ? v : m;
}

template <typename scalar_t>
void prelu_inplace(scalar_t* y, const scalar_t* alpha, int64_t batch, int64_t channels, int64_t pixels, bool nhwc) {
  if (nhwc) {
    at::parallel_for(0, batch * pixels, std::max<int64_t>(1, kGrainElements / channels), [&](int64_t b0, int64_t b1) {
      for (int64_t p = b0; p < b1; ++p) {
        scalar_t* v = y + p * channels;
        for (int64_t c = 0; c < channels; ++c) v[c] = prelu(v[c], alpha[c]);
      }
    });
  } else {
    at::parallel_for(0, batch * channels, std::max<int64_t>(1, kGrainElements / pixels), [&](int64_t b0, int64_t b1) {
      for (int64_t plane = b0; plane < b1; ++plane) {
        const scalar_t a = alpha[plane % channels];
        scalar_t* v = y + plane * pixels;
        for (int64_t i = 0; i < pixels; ++i) v[i] = prelu(v[i], a);
      }
    });
  }
}

// out (B, C, ceil(H/2), ceil(W/2)) = max over each 2x2 window (ceil mode) of prelu(y), y (B, C, H, W).
template <typename scalar_t>
void prelu_pool(const scalar_t* y, scalar_t* out, const scalar_t* alpha, int64_t batch, int64_t channels, int64_t H,
                int64_t W, bool nhwc) {
  const int64_t Ho = half_size(H), Wo = half_size(W);
  if (nhwc) {
    at::parallel_for(0, batch * Ho, std::max<int64_t>(1, kGrainElements / (4 * Wo * channels)),
                     [&](int64_t b0, int64_t b1) {
      for (int64_t orow = b0; orow < b1; ++orow) {
        const int64_t b = orow / Ho, r0 = (orow % Ho) * 2, rows = std::min<int64_t>(2, H - r0);
        for (int64_t oc = 0; oc < Wo; ++oc) {
          const int64_t c0 = oc * 2, cols = std::min<int64_t>(2, W - c0);
          scalar_t* o = out + (orow * Wo + oc) * channels;
          const scalar_t* first = y + ((b * H + r0) * W + c0) * channels;
          for (int64_t c = 0; c < channels; ++c) o[c] = prelu(first[c], alpha[c]);
          for (int64_t dr = 0; dr < rows; ++dr)
            for (int64_t dc = 0; dc < cols; ++dc) {
              if (dr == 0 && dc == 0) continue;
              const scalar_t* v = y + ((b * H + r0 + dr) * W + c0 + dc) * channels;
              for (int64_t c = 0; c < channels; ++c) o[c] = max_nan(o[c], prelu(v[c], alpha[c]));
            }
        }
      }
    });
  } else {
    at::parallel_for(0, batch * channels * Ho, std::max<int64_t>(1, kGrainElements / (4 * Wo)),
                     [&](int64_t b0, int64_t b1) {
      for (int64_t orow = b0; orow < b1; ++orow) {
        const int64_t plane = orow / Ho, r0 = (orow % Ho) * 2;
        const scalar_t a = alpha[plane % channels];
        const scalar_t* top = y + (plane * H + r0) * W;
        const scalar_t* bottom = r0 + 1 < H ? top + W : top;  // an odd last row pools with itself
        scalar_t* o = out + orow * Wo;
        for (int64_t oc = 0; oc < Wo; ++oc) {
          const int64_t c0 = oc * 2, c1 = std::min(c0 + 1, W - 1);
          scalar_t m = prelu(top[c0], a);
          m = max_nan(m, prelu(top[c1], a));
          m = max_nan(m, prelu(bottom[c0], a));
          o[oc] = max_nan(m, prelu(bottom[c1], a));
        }
      }
    });
  }
}

at::Tensor fe_conv_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& skip, const at::Tensor& weight,
                       const c10::optional<at::Tensor>& bias, const at::Tensor& alpha, bool pool) {
  // The ATen calls inside must run in the dtype given: autocast stays outside the kernel.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_fe_conv(x, skip, weight, bias, alpha);
  const at::ScalarType dtype = x.scalar_type();
  if (dtype == at::kHalf || dtype == at::kBFloat16) {  // float32 throughout, rounded once at the end
    const auto f = [](const at::Tensor& t) { return t.to(at::kFloat); };
    const auto fo = [&](const c10::optional<at::Tensor>& t) {
      return t.has_value() ? c10::optional<at::Tensor>(f(*t)) : c10::nullopt;
    };
    return fe_conv_cpu(f(x), fo(skip), f(weight), fo(bias), f(alpha), pool).to(dtype);
  }
  const at::Tensor& like = skip.has_value() ? *skip : x;
  const at::MemoryFormat fmt = output_memory_format(like);
  const int64_t B = like.size(0), H = like.size(2), W = like.size(3), C = weight.size(0);
  const int64_t Ho = pool ? half_size(H) : H, Wo = pool ? half_size(W) : W;
  if (B * C * Ho * Wo == 0) return at::empty({B, C, Ho, Wo}, like.options().memory_format(fmt));

  at::Tensor y = conv3x3_cpu(conv_input_cpu(x, skip), weight, bias, fmt);
  const at::Tensor alpha_c = alpha.contiguous();
  const bool nhwc = fmt == at::MemoryFormat::ChannelsLast;
  at::Tensor out = pool ? at::empty({B, C, Ho, Wo}, like.options().memory_format(fmt)) : y;
  AT_DISPATCH_FLOATING_TYPES(dtype, "fe_conv_cpu", [&] {
    const scalar_t* a = alpha_c.const_data_ptr<scalar_t>();
    if (pool)
      prelu_pool(y.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), a, B, C, H, W, nhwc);
    else
      prelu_inplace(y.data_ptr<scalar_t>(), a, B, C, H * W, nhwc);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(afd, CPU, m) { m.impl("fe_conv", &fe_conv_cpu); }

}  // namespace afd
