// afd::block_dct_gate on CPU: the whole-image gate's logit z = bias + weight . log(mean |D| + eps), D the
// image's block DCT (192 coefficients per block). Per tile of blocks the DCT runs as block_dct's does
// (dct_tile_cpu.h) and only the per-channel sums of |D| are kept: the coefficients never go to memory.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "afd_checks.h"
#include "cpu_simd.h"
#include "dct_tile_cpu.h"

namespace afd {
namespace {

constexpr int64_t kMaxTile = 256;  // blocks per tile, as block_dct's

// sum |v[i]| over n values, in 16 partial sums (a fixed-size inner loop the compiler vectorizes; one
// running sum would serialize on the adds).
template <typename T>
AFD_SIMD_CLONES T abs_sum(const T* __restrict v, int64_t n) {
  T part[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) part[k] += std::abs(v[i + k]);
  T s = 0;
  for (; i < n; ++i) s += std::abs(v[i]);
  for (int k = 0; k < 16; ++k) s += part[k];
  return s;
}

at::Tensor block_dct_gate_cpu(const at::Tensor& img, const at::Tensor& weight, const at::Tensor& bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_image(img, /*uint8=*/true);
  check_gate_head(img, weight, bias);
  const at::ScalarType out_dtype = weight.scalar_type();
  const at::ScalarType cd = out_dtype == at::kDouble ? at::kDouble : at::kFloat;  // half types: float32
  const bool uint8 = img.scalar_type() == at::kByte;
  const at::Tensor im = uint8 || img.scalar_type() == cd ? img : img.to(cd);  // exact for the half types
  const int64_t batch = im.size(0), hb = im.size(2) / kBlock, wb = im.size(3) / kBlock;
  at::Tensor z = at::empty({batch}, weight.options().dtype(cd));
  if (batch == 0) return z.to(out_dtype);

  const cpu::BlockTiling tiling(hb, wb, kMaxTile);
  const at::Tensor w = weight.detach().to(cd).contiguous(), b = bias.detach().to(cd);
  AT_DISPATCH_FLOATING_TYPES(cd, "block_dct_gate_cpu", [&] {
    const scalar_t* wp = w.const_data_ptr<scalar_t>();
    const scalar_t b0 = b.item<scalar_t>();
    scalar_t* zp = z.data_ptr<scalar_t>();
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      at::AutoDispatchBelowADInplaceOrView guard;
      const auto opts = im.options().dtype(cd);
      at::Tensor pixels = at::empty({kDctChannels, tiling.ld}, opts), coeffs = at::empty({kDctChannels, tiling.ld}, opts);
      std::vector<double> sums(kDctChannels);
      for (int64_t image = begin; image < end; ++image) {
        std::fill(sums.begin(), sums.end(), 0.0);
        for (int64_t t = 0; t < tiling.per_image; ++t) {
          const auto [img_index, first, count] = tiling.at(image * tiling.per_image + t);
          if (uint8)
            cpu::gather_ycc_planar<scalar_t, uint8_t>(im, img_index, first, count, pixels.data_ptr<scalar_t>(),
                                                      tiling.ld);
          else
            cpu::gather_ycc_planar<scalar_t>(im, img_index, first, count, pixels.data_ptr<scalar_t>(), tiling.ld);
          cpu::dct_planar(pixels.data_ptr<scalar_t>(), tiling.ld, count, coeffs.data_ptr<scalar_t>(), tiling.ld);
          const scalar_t* c = coeffs.const_data_ptr<scalar_t>();
          for (int64_t k = 0; k < kDctChannels; ++k) sums[k] += abs_sum(c + k * tiling.ld, count);
        }
        // no blocks (H or W = 0): 0 / 0 = NaN, torch's mean of nothing, as the reference
        const double blocks = static_cast<double>(tiling.blocks);
        double acc = b0;
        for (int64_t k = 0; k < kDctChannels; ++k)
          acc += static_cast<double>(wp[k]) * std::log(static_cast<scalar_t>(sums[k] / blocks) + scalar_t(kGateEps));
        zp[image] = static_cast<scalar_t>(acc);
      }
    });
  });
  return z.to(out_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(afd, CPU, m) { m.impl("block_dct_gate", &block_dct_gate_cpu); }

}  // namespace afd
