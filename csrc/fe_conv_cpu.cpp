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
#include <vector>

#include "afd_checks.h"
#include "conv_input_cpu.h"
#include "cpu_simd.h"

namespace afd {
namespace {

constexpr int64_t kGrainElements = 32768;  // values per parallel work item, at least

// The loops below run over rows of values with unit stride, so they vectorize (AFD_SIMD_CLONES: AVX2
// and AVX-512 versions chosen at load). PReLU as torch computes it: v > 0 ? v : a * v (NaN stays NaN);
// max as torch's max_pool2d takes it: a NaN wins and stays (x != x is the NaN test).

// v[i] = prelu(v[i], a[i]): the slopes laid out like the values (a channels-last row: alpha repeated).
template <typename T>
AFD_SIMD_CLONES void prelu_row(T* __restrict v, const T* __restrict a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] = v[i] > T(0) ? v[i] : a[i] * v[i];
}

// v[i] = prelu(v[i], a) with one slope (a plane of a contiguous map).
template <typename T>
AFD_SIMD_CLONES void prelu_plane(T* __restrict v, T a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] = v[i] > T(0) ? v[i] : a * v[i];
}

// m[i] = max_nan(prelu(top[i]), prelu(bottom[i])): a pool window's two rows (bottom = top for an odd
// last row, which pools with itself).
template <typename T>
AFD_SIMD_CLONES void prelu_max_rows(T* __restrict m, const T* __restrict top, const T* __restrict bottom,
                                    const T* __restrict a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T p = top[i] > T(0) ? top[i] : a[i] * top[i];
    const T q = bottom[i] > T(0) ? bottom[i] : a[i] * bottom[i];
    m[i] = (q > p || q != q) ? q : p;
  }
}

// out[j * c + k] = max_nan(m[2j * c + k], m[(2j + 1) * c + k]) for j < pairs: a window's two columns
// (c = 1 for a plane's row, c = channels for a channels-last row).
template <typename T>
AFD_SIMD_CLONES void max_column_pairs(T* __restrict out, const T* __restrict m, int64_t pairs, int64_t c) {
  for (int64_t j = 0; j < pairs; ++j) {
    const T* l = m + 2 * j * c;
    const T* r = l + c;
    T* o = out + j * c;
    for (int64_t k = 0; k < c; ++k) o[k] = (r[k] > l[k] || r[k] != r[k]) ? r[k] : l[k];
  }
}

// The slopes repeated along a row of `pixels` channels-last pixels (or one plane row: channels = 1).
template <typename scalar_t>
std::vector<scalar_t> slope_row(const scalar_t* alpha, int64_t channels, int64_t pixels) {
  std::vector<scalar_t> row(pixels * channels);
  for (int64_t p = 0; p < pixels; ++p) std::copy(alpha, alpha + channels, row.begin() + p * channels);
  return row;
}

template <typename scalar_t>
void prelu_inplace(scalar_t* y, const scalar_t* alpha, int64_t batch, int64_t channels, int64_t H, int64_t W,
                   bool nhwc) {
  if (nhwc) {
    const int64_t row = W * channels;
    const std::vector<scalar_t> a = slope_row(alpha, channels, W);
    at::parallel_for(0, batch * H, std::max<int64_t>(1, kGrainElements / row), [&](int64_t b0, int64_t b1) {
      for (int64_t r = b0; r < b1; ++r) prelu_row(y + r * row, a.data(), row);
    });
  } else {
    const int64_t plane = H * W;
    at::parallel_for(0, batch * channels, std::max<int64_t>(1, kGrainElements / plane), [&](int64_t b0, int64_t b1) {
      for (int64_t p = b0; p < b1; ++p) prelu_plane(y + p * plane, alpha[p % channels], plane);
    });
  }
}

// out (B, C, ceil(H/2), ceil(W/2)) = max over each 2x2 window (ceil mode) of prelu(y), y (B, C, H, W).
// Per output row: the window's two input rows PReLU'd and maxed into a row buffer, then its column pairs.
template <typename scalar_t>
void prelu_pool(const scalar_t* y, scalar_t* out, const scalar_t* alpha, int64_t batch, int64_t channels, int64_t H,
                int64_t W, bool nhwc) {
  const int64_t Ho = half_size(H), Wo = half_size(W), pairs = W / 2;
  const int64_t c = nhwc ? channels : 1, row = W * c, orow = Wo * c;  // values per input / output row
  const int64_t rows_per_image = nhwc ? Ho : channels * Ho;           // output rows of one image
  const std::vector<scalar_t> a_nhwc = nhwc ? slope_row(alpha, channels, W) : std::vector<scalar_t>();
  at::parallel_for(0, batch * rows_per_image, std::max<int64_t>(1, kGrainElements / (2 * row)),
                   [&](int64_t b0, int64_t b1) {
    std::vector<scalar_t> m(row), a_plane(nhwc ? 0 : row);
    int64_t plane_of_a = -1;
    for (int64_t o = b0; o < b1; ++o) {
      const int64_t oh = o % Ho, plane = o / Ho;  // plane: the image (NHWC) or image x channel (NCHW)
      const scalar_t* a = a_nhwc.data();
      if (!nhwc) {
        if (plane % channels != plane_of_a) {
          plane_of_a = plane % channels;
          std::fill(a_plane.begin(), a_plane.end(), alpha[plane_of_a]);
        }
        a = a_plane.data();
      }
      const scalar_t* top = y + (plane * H + 2 * oh) * row;
      const scalar_t* bottom = 2 * oh + 1 < H ? top + row : top;
      prelu_max_rows(m.data(), top, bottom, a, row);
      scalar_t* dst = out + o * orow;
      max_column_pairs(dst, m.data(), pairs, c);
      if (W % 2) std::copy(m.end() - c, m.end(), dst + pairs * c);  // an odd last column pools with itself
    }
  });
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
      prelu_inplace(y.data_ptr<scalar_t>(), a, B, C, H, W, nhwc);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(afd, CPU, m) { m.impl("fe_conv", &fe_conv_cpu); }

}  // namespace afd
