// afd::block_dct on CUDA: (B,3,H,W) RGB 0..255 -> (B,192,H/8,W/8) JPEG block-DCT coefficients.
//
// Tiling: one CTA (128 threads) takes one strip of 8 pixel rows x TW blocks (TW = 16 blocks =
// 128 pixels for float/half, 8 for double) of one image:
//   1. load the 3 x 8 x 8*TW strip (consecutive threads read consecutive pixels of a row, so the
//      reads are coalesced for NCHW and cover 3 contiguous channels for NHWC), apply the colour
//      transform and level shift, store Y/Cb/Cr in shared memory (row pitch 8*TW+1: conflict-free);
//   2. row pass: one thread per (plane, block, row) does the 8-point DCT of its row in place;
//   3. column pass: one thread per (plane, block, column); results go to a [192][TW+1] buffer
//      indexed (plane, u*8+v);
//   4. write 192 x TW outputs in zig-zag order: threads run along the blocks for NCHW outputs
//      (TW contiguous values per channel) or along the channels for NHWC outputs (192 contiguous).
// Accumulation in float32 (float64 for double). Any input/output strides.
#include "afd_device.cuh"

namespace afd {
namespace cuda {
namespace {

constexpr int kThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kThreads) block_dct_kernel(const T* __restrict__ img, Strides4 ist,
                                                             T* __restrict__ out, Strides4 ost, int Hb, int Wb,
                                                             int strips_w) {
  using A = typename Num<T>::Acc;
  constexpr int TW = sizeof(A) == 8 ? 8 : 16;  // blocks per strip
  constexpr int PW = TW * 8;                   // pixels per strip row
  constexpr int RS = PW + 1;                   // shared row pitch (odd: conflict-free)
  constexpr int OS = TW + 1;                   // pitch of the output buffer
  __shared__ A s_pix[3 * 8 * RS];
  __shared__ A s_out[192 * OS];
  __shared__ int s_zz[64];

  const int tid = threadIdx.x;
  if (tid < 64) s_zz[tid] = c_tab.zigzag[tid];

  const int sid = blockIdx.x;
  const int strip = sid % strips_w;
  const int rest = sid / strips_w;
  const int hb = rest % Hb;
  const int b = rest / Hb;
  const int wb0 = strip * TW;
  const int nblk = min(TW, Wb - wb0);

  // 1. load + colour transform.
  const T* ib = img + b * ist.s[0] + static_cast<int64_t>(hb) * 8 * ist.s[2] + static_cast<int64_t>(wb0) * 8 * ist.s[3];
  const int npix = nblk * 8;
  for (int i = tid; i < 8 * PW; i += kThreads) {
    const int y = i / PW, x = i % PW;
    if (x < npix) {
      const T* p = ib + y * ist.s[2] + x * ist.s[3];
      const A r = load_acc(p), g = load_acc(p + ist.s[1]), bl = load_acc(p + 2 * ist.s[1]);
#pragma unroll
      for (int cc = 0; cc < 3; ++cc) {
        s_pix[(cc * 8 + y) * RS + x] = ycc_coef<A>(cc, 0) * r + ycc_coef<A>(cc, 1) * g +
                                       ycc_coef<A>(cc, 2) * bl + ycc_offset<A>(cc);
      }
    }
  }
  __syncthreads();

  // 2. row pass (horizontal frequencies), in place. Task (cc, blk, y), y fastest.
  for (int t = tid; t < 3 * TW * 8; t += kThreads) {
    const int y = t & 7, blk = (t >> 3) % TW, cc = t / (8 * TW);
    if (blk < nblk) {
      A* row = s_pix + (cc * 8 + y) * RS + blk * 8;
      dct8<A>(row, 1, row, 1);
    }
  }
  __syncthreads();

  // 3. column pass (vertical frequencies) -> s_out[(cc*64 + u*8 + col) * OS + blk].
  for (int t = tid; t < 3 * TW * 8; t += kThreads) {
    const int col = t & 7, blk = (t >> 3) % TW, cc = t / (8 * TW);
    if (blk < nblk)
      dct8<A>(s_pix + cc * 8 * RS + blk * 8 + col, RS, s_out + (cc * 64 + col) * OS + blk, 8 * OS);
  }
  __syncthreads();

  // 4. write in zig-zag channel order.
  T* ob = out + b * ost.s[0] + static_cast<int64_t>(hb) * ost.s[2] + static_cast<int64_t>(wb0) * ost.s[3];
  const bool chan_fastest = ost.s[1] == 1;
  for (int i = tid; i < 192 * TW; i += kThreads) {
    int ch, j;
    if (chan_fastest) {
      j = i / 192;
      ch = i % 192;
    } else {
      ch = i / TW;
      j = i % TW;
    }
    if (j < nblk) {
      const int cc = ch >> 6, k = ch & 63;
      ob[ch * ost.s[1] + j * ost.s[3]] = Num<T>::from_acc(s_out[(cc * 64 + s_zz[k]) * OS + j]);
    }
  }
}

template <typename T>
cudaError_t launch_typed(const void* img, Strides4 ist, void* out, Strides4 ost, int B, int H, int W,
                         cudaStream_t stream) {
  using A = typename Num<T>::Acc;
  constexpr int TW = sizeof(A) == 8 ? 8 : 16;
  const int Hb = H / 8, Wb = W / 8;
  const int strips_w = ceil_div(Wb, TW);
  const int64_t nctas = static_cast<int64_t>(strips_w) * Hb * B;
  if (nctas == 0) return cudaSuccess;
  if (nctas > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  auto kern = &block_dct_kernel<T>;
  AFD_LAUNCH(kern, dim3(static_cast<unsigned>(nctas)), dim3(kThreads), 0, stream, static_cast<const T*>(img), ist,
             static_cast<T*>(out), ost, Hb, Wb, strips_w);
  return cudaSuccess;
}

}  // namespace

cudaError_t launch_block_dct(const void* img, Strides4 img_st, void* out, Strides4 out_st, int B, int H, int W,
                             DType dt, cudaStream_t stream) {
  switch (dt) {
    case DType::kFloat32:
      return launch_typed<float>(img, img_st, out, out_st, B, H, W, stream);
    case DType::kFloat64:
      return launch_typed<double>(img, img_st, out, out_st, B, H, W, stream);
    case DType::kFloat16:
      return launch_typed<__half>(img, img_st, out, out_st, B, H, W, stream);
    case DType::kBFloat16:
      return launch_typed<__nv_bfloat16>(img, img_st, out, out_st, B, H, W, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace afd
