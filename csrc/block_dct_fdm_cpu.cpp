// afd::block_dct_fdm on CPU: block DCT and the FDE-Net MLP fused per tile of blocks. Each thread
// keeps its tile's pixels, coefficients and hidden activations in planar buffers (feature-major,
// blocks contiguous) that stay in cache; only the (B, C, Hb, Wb) map is written to memory. The
// three layers are BLAS GEMMs on the tile, the last one writing into the output; the sigmoid is
// applied to the whole output at the end. A uint8 image is read as it is (its pixels converted to
// the weights' dtype as they are gathered into a tile).
#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/library.h>

#include "afd_checks.h"
#include "dct_tile_cpu.h"

namespace afd {
namespace {

constexpr int64_t kMaxTile = 256;  // blocks per tile: all per-tile buffers together stay in L2

// data[r * ld + c] = f(data[r * ld + c] + bias[r or c]) over a rows x cols matrix.
template <typename scalar_t, typename F>
AFD_SIMD_CLONES void add_bias_apply(scalar_t* data, int64_t rows, int64_t cols, int64_t ld, const scalar_t* bias,
                                    bool bias_per_row, F f) {
  for (int64_t r = 0; r < rows; ++r) {
    scalar_t* row = data + r * ld;
    if (bias_per_row) {
      const scalar_t b = bias[r];
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) row[c] = f(row[c] + b);
    } else {
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) row[c] = f(row[c] + bias[c]);
    }
  }
}

// ReLU as torch computes it, NaN passing through.
struct Relu {
  template <typename scalar_t>
  scalar_t operator()(scalar_t v) const {
    return v < scalar_t(0) ? scalar_t(0) : v;
  }
};
struct Identity {
  template <typename scalar_t>
  scalar_t operator()(scalar_t v) const {
    return v;
  }
};

at::Tensor block_dct_fdm_cpu(const at::Tensor& img, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                             const at::Tensor& b2, const at::Tensor& w3, const at::Tensor& b3,
                             const c10::optional<at::Tensor>& gate) {
  // The ATen calls inside must run in the dtype given: autocast stays outside the kernel.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_image(img, /*uint8=*/true);
  check_fde_weights(img, w1, b1, w2, b2, w3, b3);
  check_gate_logit(img, gate);
  // The compute and output dtype: the weights' (a floating img has it too; a uint8 img's pixels are
  // read as they are and converted per tile, never copied to a floating image).
  const at::ScalarType dtype = w1.scalar_type();
  const bool uint8 = img.scalar_type() == at::kByte;
  if (dtype == at::kHalf || dtype == at::kBFloat16) {
    const auto f = [](const at::Tensor& t) { return t.to(at::kFloat); };
    // float32 throughout (the gate too), rounded once at the end
    return block_dct_fdm_cpu(uint8 ? img : f(img), f(w1), f(b1), f(w2), f(b2), f(w3), f(b3), gate).to(dtype);
  }

  const int64_t batch = img.size(0), hb = img.size(2) / kBlock, wb = img.size(3) / kBlock;
  const int64_t h1 = w1.size(0), h2 = w2.size(0), channels = w3.size(0);
  const at::MemoryFormat fmt = output_memory_format(img);
  const auto opts = img.options().dtype(dtype);
  at::Tensor out = at::empty({batch, channels, hb, wb}, opts.memory_format(fmt));
  if (out.numel() == 0) return out;

  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  const cpu::BlockTiling tiling(hb, wb, kMaxTile);
  // Detached: these GEMMs run below autograd (backward comes from the reference). Contiguous once,
  // not per tile.
  const at::Tensor w1c = w1.detach().contiguous(), w2c = w2.detach().contiguous(), w3c = w3.detach().contiguous();
  const at::Tensor b1c = b1.contiguous(), b2c = b2.contiguous(), b3c = b3.contiguous();
  // channels_last: a tile's output is a (n, C) block of rows; contiguous: a (C, n) slab of the planes.
  const at::Tensor out_rows = channels_last ? out.permute({0, 2, 3, 1}).reshape({-1, channels}) : at::Tensor();
  const at::Tensor out_planes = channels_last ? at::Tensor() : out.view({batch, channels, hb * wb});

  AT_DISPATCH_FLOATING_TYPES(dtype, "block_dct_fdm_cpu", [&] {
    const scalar_t* bias1 = b1c.const_data_ptr<scalar_t>();
    const scalar_t* bias2 = b2c.const_data_ptr<scalar_t>();
    const scalar_t* bias3 = b3c.const_data_ptr<scalar_t>();
    at::parallel_for(0, batch * tiling.per_image, 1, [&](int64_t begin, int64_t end) {
      // Worker threads do not inherit the caller's dispatch state; the GEMMs below build no graph.
      at::AutoDispatchBelowADInplaceOrView guard;
      at::Tensor pixels = at::empty({kDctChannels, tiling.ld}, opts);
      at::Tensor coeffs = at::empty({kDctChannels, tiling.ld}, opts);
      at::Tensor hidden1 = at::empty({h1, tiling.ld}, opts);
      at::Tensor hidden2 = at::empty({h2, tiling.ld}, opts);
      for (int64_t index = begin; index < end; ++index) {
        const auto [image, first, count] = tiling.at(index);
        if (uint8)
          cpu::gather_ycc_planar<scalar_t, uint8_t>(img, image, first, count, pixels.data_ptr<scalar_t>(), tiling.ld);
        else
          cpu::gather_ycc_planar<scalar_t>(img, image, first, count, pixels.data_ptr<scalar_t>(), tiling.ld);
        cpu::dct_planar(pixels.data_ptr<scalar_t>(), tiling.ld, count, coeffs.data_ptr<scalar_t>(), tiling.ld);
        at::Tensor a1 = hidden1.narrow(1, 0, count), a2 = hidden2.narrow(1, 0, count);
        at::mm_out(a1, w1c, coeffs.narrow(1, 0, count));
        add_bias_apply(a1.data_ptr<scalar_t>(), h1, count, tiling.ld, bias1, true, Relu{});
        at::mm_out(a2, w2c, a1);
        add_bias_apply(a2.data_ptr<scalar_t>(), h2, count, tiling.ld, bias2, true, Relu{});
        if (channels_last) {
          at::Tensor dst = out_rows.narrow(0, image * tiling.blocks + first, count);
          at::mm_out(dst, a2.t(), w3c.t());
          add_bias_apply(dst.data_ptr<scalar_t>(), count, channels, channels, bias3, false, Identity{});
        } else {
          at::Tensor dst = out_planes.select(0, image).narrow(1, first, count);
          at::mm_out(dst, w3c, a2);
          add_bias_apply(dst.data_ptr<scalar_t>(), channels, count, tiling.blocks, bias3, true, Identity{});
        }
      }
    });
  });
  // One vectorized ATen pass over the small output beats a scalar exp per value inside the tiles.
  out.sigmoid_();
  apply_gate_(out, gate);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(afd, CPU, m) { m.impl("block_dct_fdm", &block_dct_fdm_cpu); }

}  // namespace afd
