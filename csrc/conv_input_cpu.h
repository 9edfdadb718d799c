// The input side of the FE-Net's 3x3 convs on CPU, shared by afd::fe_conv and afd::repconv_dedrift:
// the decoder's cat(up2(x), skip) written by one pass of our own (no upsampled copy of x and no
// aten::cat), and the zero-padded 3x3 conv in oneDNN through at::conv2d.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <cstring>

#include "afd_checks.h"
#include "cpu_simd.h"

namespace afd {

// One channels-last row of u: pixel c gets x's pixel c / 2 (Cx values), then skip's pixel c (Cs values).
// Element loops, not memcpy calls: a pixel is a few dozen bytes. no-tree-loop-distribute-patterns keeps
// GCC from turning the loops back into library calls.
template <typename T>
AFD_SIMD_CLONES __attribute__((optimize("no-tree-loop-distribute-patterns"))) void interleave_row(
    T* __restrict u, const T* __restrict xrow, const T* __restrict srow, int64_t W, int64_t Cx, int64_t Cs) {
  const int64_t Cin = Cx + Cs;
  for (int64_t c = 0; c < W; ++c) {
    const T* xp = xrow + (c / 2) * Cx;
    const T* sp = srow + c * Cs;
    T* up = u + c * Cin;
    for (int64_t k = 0; k < Cx; ++k) up[k] = xp[k];
    for (int64_t k = 0; k < Cs; ++k) up[Cx + k] = sp[k];
  }
}

// u = x, or cat(up2(x), skip) along channels (up2(x)[h, w] = x[h / 2, w / 2]) in skip's output
// memory format. x and skip are of one floating dtype (checked by check_conv_input).
inline at::Tensor conv_input_cpu(const at::Tensor& x, const c10::optional<at::Tensor>& skip) {
  if (!skip.has_value()) return x;
  const at::MemoryFormat fmt = output_memory_format(*skip);
  const at::Tensor xc = x.contiguous(fmt), sc = skip->contiguous(fmt);
  const int64_t B = sc.size(0), Cs = sc.size(1), H = sc.size(2), W = sc.size(3);
  const int64_t Cx = xc.size(1), h = xc.size(2), w = xc.size(3), Cin = Cx + Cs;
  at::Tensor u = at::empty({B, Cin, H, W}, sc.options().memory_format(fmt));
  if (u.numel() == 0) return u;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sc.scalar_type(), "conv_input_cpu", [&] {
    const scalar_t* xp = xc.const_data_ptr<scalar_t>();
    const scalar_t* sp = sc.const_data_ptr<scalar_t>();
    scalar_t* up = u.data_ptr<scalar_t>();
    if (fmt == at::MemoryFormat::ChannelsLast) {
      // one output row of pixels per item: Cx values from x's covering pixel, Cs from skip's own
      at::parallel_for(0, B * H, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, W * Cin)),
                       [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const int64_t b = row / H, r = row % H;
          const scalar_t* xrow = xp + ((b * h + r / 2) * w) * Cx;
          const scalar_t* srow = sp + row * W * Cs;
          scalar_t* urow = up + row * W * Cin;
          interleave_row(urow, xrow, srow, W, Cx, Cs);
        }
      });
    } else {
      // one output plane row per item: x's planes upsampled, then skip's planes copied
      at::parallel_for(0, B * Cin * H, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, W)),
                       [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const int64_t r = row % H, plane = row / H, b = plane / Cin, ci = plane % Cin;
          scalar_t* urow = up + row * W;
          if (ci < Cx) {
            const scalar_t* xrow = xp + ((b * Cx + ci) * h + r / 2) * w;
            for (int64_t c = 0; c < W; ++c) urow[c] = xrow[c / 2];
          } else {
            std::memcpy(urow, sp + ((b * Cs + ci - Cx) * H + r) * W, sizeof(scalar_t) * W);
          }
        }
      });
    }
  });
  return u;
}

// conv3x3(u, weight) + bias, zero padding 1, in u's dtype (float32 / float64 here), output in fmt.
// A NaN or infinite weight meets the zero padding as the reference defines it: the padding is
// explicit, so a tap on it gives 0 * w = NaN (at::conv2d's padding=1 leaves padded taps out on
// oneDNN's path). Finite weights give 0 there either way and skip the padded copy of u.
inline at::Tensor conv3x3_cpu(const at::Tensor& u, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                              at::MemoryFormat fmt) {
  const bool finite_weights = at::isfinite(weight).all().item<bool>();
  at::Tensor out = finite_weights ? at::conv2d(u, weight, bias, /*stride=*/{1, 1}, /*padding=*/{1, 1})
                                  : at::conv2d(at::constant_pad_nd(u, {1, 1, 1, 1}), weight, bias);
  if (!out.is_contiguous(fmt)) out = out.contiguous(fmt);
  return out;
}

}  // namespace afd
