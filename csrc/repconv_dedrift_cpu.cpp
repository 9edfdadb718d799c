// afd::repconv_dedrift on CPU: the 3x3 conv (with its bias; on x, or on the decoder's cat(up2(x), skip)
// written by conv_input_cpu.h) runs in oneDNN through at::conv2d, then
// one pass over its output, in place, applies act(feat + d * fdm cell). The upsampled FDM is never
// built: each feature pixel reads the FDM cell that covers it.
#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "afd_checks.h"
#include "conv_input_cpu.h"

namespace afd {
namespace {

constexpr int64_t kGrainElements = 32768;  // feature values per parallel work item, at least

// The stem activations as torch computes them, NaN passing through.
template <Act kAct, typename scalar_t>
scalar_t activate(scalar_t v) {
  if constexpr (kAct == Act::kRelu) return v < scalar_t(0) ? scalar_t(0) : v;
  if constexpr (kAct == Act::kRelu6) return v < scalar_t(0) ? scalar_t(0) : (v > scalar_t(6) ? scalar_t(6) : v);
  return v;
}

// Contiguous (B, C, Hf, Wf): per FDM row of cells, expand it once to a Wf-wide scale row, then
// sweep the Hf/Hb feature rows it covers with a unit-stride loop.
template <Act kAct, typename scalar_t>
void dedrift_nchw(scalar_t* d, const scalar_t* feat, const scalar_t* fdm, int64_t planes, int64_t hf, int64_t wf,
                  int64_t hb, int64_t wb) {
  const int64_t rh = hf / hb, rw = wf / wb, row_block = rh * wf;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / row_block);
  at::parallel_for(0, planes * hb, grain, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scale(wf);
    for (int64_t cell_row = begin; cell_row < end; ++cell_row) {
      const scalar_t* cells = fdm + cell_row * wb;
      for (int64_t w = 0; w < wf; ++w) scale[w] = cells[w / rw];
      const int64_t offset = cell_row * row_block;  // plane * Hf*Wf + (cell_row % hb) * rh * Wf
      scalar_t* dp = d + offset;
      const scalar_t* fp = feat + offset;
      for (int64_t r = 0; r < rh; ++r, dp += wf, fp += wf)
        for (int64_t w = 0; w < wf; ++w) dp[w] = activate<kAct>(fp[w] + dp[w] * scale[w]);
    }
  });
}

// Channels-last (B, Hf, Wf, C): every pixel's C channels scale by its cell's C-vector.
template <Act kAct, typename scalar_t>
void dedrift_nhwc(scalar_t* d, const scalar_t* feat, const scalar_t* fdm, int64_t batch, int64_t channels,
                  int64_t hf, int64_t wf, int64_t hb, int64_t wb) {
  const int64_t rh = hf / hb, rw = wf / wb, row = wf * channels;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / row);
  at::parallel_for(0, batch * hf, grain, [&](int64_t begin, int64_t end) {
    for (int64_t pixel_row = begin; pixel_row < end; ++pixel_row) {
      const int64_t b = pixel_row / hf, h = pixel_row % hf;
      const scalar_t* cells = fdm + (b * hb + h / rh) * wb * channels;
      scalar_t* dp = d + pixel_row * row;
      const scalar_t* fp = feat + pixel_row * row;
      for (int64_t w = 0; w < wf; ++w, dp += channels, fp += channels) {
        const scalar_t* cell = cells + w / rw * channels;
        for (int64_t c = 0; c < channels; ++c) dp[c] = activate<kAct>(fp[c] + dp[c] * cell[c]);
      }
    }
  });
}

at::Tensor repconv_dedrift_cpu(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                               const at::Tensor& fdm, const at::Tensor& feat, c10::string_view act,
                               const c10::optional<at::Tensor>& skip) {
  // The ATen calls inside must run in the dtype given: autocast stays outside the kernel.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_repconv_dedrift(x, weight, bias, fdm, feat, skip);
  const Act code = parse_act(act);
  const at::ScalarType dtype = x.scalar_type();
  if (dtype == at::kHalf || dtype == at::kBFloat16) {
    const auto f = [](const at::Tensor& t) { return t.to(at::kFloat); };
    const auto fo = [&](const c10::optional<at::Tensor>& t) {
      return t.has_value() ? c10::optional<at::Tensor>(f(*t)) : c10::nullopt;
    };
    return repconv_dedrift_cpu(f(x), f(weight), fo(bias), f(fdm), f(feat), act, fo(skip)).to(dtype);
  }

  const int64_t batch = feat.size(0), channels = feat.size(1), hf = feat.size(2), wf = feat.size(3);
  const int64_t hb = fdm.size(2), wb = fdm.size(3);
  const at::MemoryFormat fmt = output_memory_format(feat);
  if (feat.numel() == 0) return at::empty(feat.sizes(), feat.options().memory_format(fmt));

  // The conv adds the bias itself, as the reference's F.conv2d does; its fresh output is the
  // result buffer (conv_input_cpu.h: the decoder's up/cat input written by one pass of our own).
  at::Tensor out = conv3x3_cpu(conv_input_cpu(x, skip), weight, bias, fmt);
  const at::Tensor feat_c = feat.contiguous(fmt), fdm_c = fdm.contiguous(fmt);

  AT_DISPATCH_FLOATING_TYPES(dtype, "repconv_dedrift_cpu", [&] {
    scalar_t* d = out.data_ptr<scalar_t>();
    const scalar_t* f = feat_c.const_data_ptr<scalar_t>();
    const scalar_t* m = fdm_c.const_data_ptr<scalar_t>();
    const auto run = [&](auto act_tag) {
      constexpr Act kAct = decltype(act_tag)::value;
      if (fmt == at::MemoryFormat::ChannelsLast)
        dedrift_nhwc<kAct>(d, f, m, batch, channels, hf, wf, hb, wb);
      else
        dedrift_nchw<kAct>(d, f, m, batch * channels, hf, wf, hb, wb);
    };
    switch (code) {
      case Act::kRelu: run(std::integral_constant<Act, Act::kRelu>{}); break;
      case Act::kRelu6: run(std::integral_constant<Act, Act::kRelu6>{}); break;
      case Act::kIdentity: run(std::integral_constant<Act, Act::kIdentity>{}); break;
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(afd, CPU, m) { m.impl("repconv_dedrift", &repconv_dedrift_cpu); }

}  // namespace afd
