// The block-DCT front end shared by the CPU kernels of afd::block_dct and afd::block_dct_fdm.
//
// Blocks are processed in tiles that never straddle two images. A tile is stored "planar":
// value p of the tile's block t lives at buf[p * ld + t], so every arithmetic loop runs over the
// tile's blocks with unit stride and vectorizes, and the 2-D DCT is done separably (vertical
// 1-D DCTs, then horizontal ones), a quarter of the work of the 64x64 basis product.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>

#include "afd_constants.h"

#include "cpu_simd.h"

namespace afd::cpu {

// Splits each image's hb*wb blocks (row-major) into equal tiles of at most max_tile blocks.
struct BlockTiling {
  int64_t blocks, per_image, tile;
  // Planar row stride: an odd multiple of 16 elements, so the 192 rows of a tile do not all map
  // to the same few cache sets.
  int64_t ld;

  BlockTiling(int64_t hb, int64_t wb, int64_t max_tile)
      : blocks(hb * wb),
        per_image((blocks + max_tile - 1) / max_tile),
        tile(per_image ? (blocks + per_image - 1) / per_image : 0),
        ld((tile + 31) / 32 * 32 + 16) {}

  struct Tile {
    int64_t image, first, count;
  };
  Tile at(int64_t index) const {
    const int64_t first = index % per_image * tile;
    return {index / per_image, first, std::min(tile, blocks - first)};
  }
};

// Level-shifted YCbCr pixels of blocks [first, first + count) of one image (base points at its
// pixel (0, 0, 0); strides in elements) into a planar (192, ld) tile: row c*64 + y*8 + x holds
// pixel (y, x) of colour plane c. Runs along block rows, so with unit-stride rows (kUnitW) each
// pixel row of a run of blocks is one contiguous read that the compiler de-interleaves. The pixels
// (pixel_t) are of the compute type scalar_t, or uint8 (0..255, converted exactly as they are read).
template <typename scalar_t, typename pixel_t, bool kUnitW>
AFD_SIMD_CLONES void gather_ycc_planar(const pixel_t* __restrict base, int64_t sc, int64_t sh, int64_t stride_w,
                                       int64_t wb, int64_t first, int64_t count, scalar_t* __restrict dst,
                                       int64_t ld) {
  const int64_t sw = kUnitW ? 1 : stride_w;
  scalar_t ycc[3][3], off[3];
  for (int c = 0; c < 3; ++c) {
    off[c] = static_cast<scalar_t>(kYCbCrShiftedOffset[c]);
    for (int k = 0; k < 3; ++k) ycc[c][k] = static_cast<scalar_t>(kYCbCr[c][k]);
  }
  for (int64_t t = 0; t < count;) {
    const int64_t i = (first + t) / wb, j = (first + t) % wb, run = std::min(count - t, wb - j);
    for (int y = 0; y < kBlock; ++y) {
      const pixel_t* r = base + (i * kBlock + y) * sh + j * kBlock * sw;
      const pixel_t* g = r + sc;
      const pixel_t* b = g + sc;
      scalar_t* d = dst + y * kBlock * ld + t;
      for (int x = 0; x < kBlock; ++x) {
#pragma omp simd
        for (int64_t s = 0; s < run; ++s) {
          const int64_t p = (s * kBlock + x) * sw;
          const scalar_t R = static_cast<scalar_t>(r[p]), G = static_cast<scalar_t>(g[p]),
                         B = static_cast<scalar_t>(b[p]);
          d[x * ld + s] = ycc[0][0] * R + ycc[0][1] * G + ycc[0][2] * B + off[0];
          d[(kCoeff + x) * ld + s] = ycc[1][0] * R + ycc[1][1] * G + ycc[1][2] * B + off[1];
          d[(2 * kCoeff + x) * ld + s] = ycc[2][0] * R + ycc[2][1] * G + ycc[2][2] * B + off[2];
        }
      }
    }
    t += run;
  }
}

// img's pixels are of type pixel_t: scalar_t (the default), or uint8_t for a uint8 image.
template <typename scalar_t, typename pixel_t = scalar_t>
void gather_ycc_planar(const at::Tensor& img, int64_t image, int64_t first, int64_t count, scalar_t* dst,
                       int64_t ld) {
  const pixel_t* base = img.const_data_ptr<pixel_t>() + image * img.stride(0);
  const int64_t sc = img.stride(1), sh = img.stride(2), sw = img.stride(3), wb = img.size(3) / kBlock;
  if (sw == 1)
    gather_ycc_planar<scalar_t, pixel_t, true>(base, sc, sh, 1, wb, first, count, dst, ld);
  else
    gather_ycc_planar<scalar_t, pixel_t, false>(base, sc, sh, sw, wb, first, count, dst, ld);
}

// Planar YCbCr tile (clobbered) -> planar coefficients: out row c*64 + k (row stride ld_out) holds
// zig-zag coefficient k of colour plane c (Y, Cb, Cr) for each of the count blocks.
template <typename scalar_t>
AFD_SIMD_CLONES void dct_planar(scalar_t* __restrict pix, int64_t ld, int64_t count, scalar_t* __restrict out,
                                int64_t ld_out) {
  scalar_t m[kBlock][kBlock];
  for (int u = 0; u < kBlock; ++u)
    for (int y = 0; y < kBlock; ++y) m[u][y] = static_cast<scalar_t>(kDct[u][y]);
  int zigzag_row[kCoeff];  // row-major (u, v) -> zig-zag index
  for (int k = 0; k < kCoeff; ++k) zigzag_row[kZigzag[k]] = k;

  // Vertical 1-D DCT of each block column x, in place: rows (y, x) -> (u, x).
  for (int c = 0; c < 3; ++c)
    for (int x = 0; x < kBlock; ++x) {
      scalar_t* col = pix + (c * kCoeff + x) * ld;
#pragma omp simd
      for (int64_t t = 0; t < count; ++t) {
        scalar_t v[kBlock];
        for (int y = 0; y < kBlock; ++y) v[y] = col[y * kBlock * ld + t];
        for (int u = 0; u < kBlock; ++u) {
          scalar_t s = 0;
          for (int y = 0; y < kBlock; ++y) s += m[u][y] * v[y];
          col[u * kBlock * ld + t] = s;
        }
      }
    }
  // Horizontal 1-D DCT of each row u: (u, x) -> (u, v), stored in zig-zag order.
  for (int c = 0; c < 3; ++c)
    for (int u = 0; u < kBlock; ++u) {
      const scalar_t* row = pix + (c * kCoeff + u * kBlock) * ld;
      scalar_t* dst[kBlock];
      for (int v = 0; v < kBlock; ++v) dst[v] = out + (c * kCoeff + zigzag_row[u * kBlock + v]) * ld_out;
#pragma omp simd
      for (int64_t t = 0; t < count; ++t) {
        scalar_t h[kBlock];
        for (int x = 0; x < kBlock; ++x) h[x] = row[x * ld + t];
        for (int v = 0; v < kBlock; ++v) {
          scalar_t s = 0;
          for (int x = 0; x < kBlock; ++x) s += m[v][x] * h[x];
          dst[v][t] = s;
        }
      }
    }
}

}  // namespace afd::cpu
