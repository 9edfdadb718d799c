// afd::block_dct on CPU. Per tile of blocks: gather the pixels planar, then the separable DCT
// writes the coefficients straight into the output planes (contiguous layout), or into a tile
// buffer that is copied, transposed, into the output rows (channels_last).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/library.h>

#include "afd_checks.h"
#include "dct_tile_cpu.h"

namespace afd {
namespace {

constexpr int64_t kMaxTile = 256;  // blocks per tile: the (192, 256) tile buffers stay in L2

at::Tensor block_dct_cpu(const at::Tensor& img) {
  check_image(img);
  const at::ScalarType dtype = img.scalar_type();
  if (dtype == at::kHalf || dtype == at::kBFloat16) return block_dct_cpu(img.to(at::kFloat)).to(dtype);

  const int64_t batch = img.size(0), hb = img.size(2) / kBlock, wb = img.size(3) / kBlock;
  const at::MemoryFormat fmt = output_memory_format(img);
  at::Tensor out = at::empty({batch, kDctChannels, hb, wb}, img.options().memory_format(fmt));
  if (out.numel() == 0) return out;

  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  const cpu::BlockTiling tiling(hb, wb, kMaxTile);
  // channels_last: a tile is a (n, 192) block of rows; contiguous: a (192, n) slab of the planes.
  const at::Tensor out_rows = channels_last ? out.permute({0, 2, 3, 1}).reshape({-1, kDctChannels}) : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES(dtype, "block_dct_cpu", [&] {
    at::parallel_for(0, batch * tiling.per_image, 1, [&](int64_t begin, int64_t end) {
      // Worker threads do not inherit the caller's dispatch state; the copies below build no graph.
      at::AutoDispatchBelowADInplaceOrView guard;
      at::Tensor pixels = at::empty({kDctChannels, tiling.ld}, img.options());
      at::Tensor coeffs = channels_last ? at::empty({kDctChannels, tiling.ld}, img.options()) : at::Tensor();
      for (int64_t index = begin; index < end; ++index) {
        const auto [image, first, count] = tiling.at(index);
        cpu::gather_ycc_planar(img, image, first, count, pixels.data_ptr<scalar_t>(), tiling.ld);
        if (channels_last) {
          cpu::dct_planar(pixels.data_ptr<scalar_t>(), tiling.ld, count, coeffs.data_ptr<scalar_t>(), tiling.ld);
          out_rows.narrow(0, image * tiling.blocks + first, count).copy_(coeffs.narrow(1, 0, count).t());
        } else {
          scalar_t* planes = out.data_ptr<scalar_t>() + image * kDctChannels * tiling.blocks + first;
          cpu::dct_planar(pixels.data_ptr<scalar_t>(), tiling.ld, count, planes, tiling.blocks);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(afd, CPU, m) { m.impl("block_dct", &block_dct_cpu); }

}  // namespace afd
