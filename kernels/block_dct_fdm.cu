// afd::block_dct_fdm on CUDA: (B,3,H,W) RGB -> (B,C,H/8,W/8) FDM =
//   sigmoid(w3 relu(w2 relu(w1 D + b1) + b2) + b3) per 8x8 block, D = the block's 192 DCT coefficients.
// The 192-channel coefficient tensor never goes to global memory. Two kernels:
//
// (a) fdm_generic_kernel (every dtype, any image strides, any h1/h2/C that fit in shared memory;
//     the image of the weights' dtype or uint8, converted as its pixels are loaded). One CTA (256
//     threads) takes NB = 32 consecutive blocks (16 for double) of the flattened (b, hb, wb) order.
//     Shared memory holds D as [192][NB+1] (then H1 [h1][NB+1], H2 [h2][NB+1]).
//     The pixels are loaded 8 consecutive pixels at a time (coalesced rows), colour-transformed and
//     DCT'd in place (separable, row then column pass, coefficients in natural (u,v) order; the
//     zig-zag order is applied when reading w1's columns). The three layers are SIMT GEMMs: each
//     thread computes 4 outputs x NB/8 blocks with float (double) accumulators, weights via __ldg.
//
// (b) fdm_mma_kernel (float16 / bfloat16, dense NCHW or NHWC image of the weights' dtype; the
//     launcher widens a uint8 image to the weights' dtype first (csrc/cuda/block_dct_fdm_cuda.cpp):
//     its 8-pixel row pieces are 8 bytes, not the 16 that the cp.async staging copies): tensor cores (mma.sync
//     m16n8k16, fp32 accumulation). The colour transform, level shift, DCT and zig-zag order are
//     linear, so they are folded into the first layer by a tiny prologue kernel (fdm_fold_kernel):
//     z1 = w1f . rgb + b1f with w1f = w1 . K (K: 192 pixel values -> 192 coefficients, columns in the
//     order the pixels sit in shared memory) and b1f = b1 + w1 . D(level-shift offsets) + 128 *
//     sum(w1f_exact - w1f_rounded) (centres the rounding error of w1f on mid-grey).
//     Persistent CTAs (one per SM, 4 warps), weights resident in shared memory (rows padded by 8
//     elements so ldmatrix is conflict-free), image tiles of 128 blocks double-buffered with 16-byte
//     cp.async (a block's 192 pixels as 24 16-byte row pieces; zero-filled past the end). Each warp owns
//     32 blocks (two m16 tiles): layer 1 runs in chunks of 64 (or 32) hidden units whose ReLU'd fp32
//     accumulators are repacked in registers as the A operand of layer 2 (the C-fragment of two
//     n8 tiles is the A-fragment of one k16 tile), so neither hidden layer touches shared memory;
//     layer 3 runs in chunks of 32 outputs, sigmoid, and stores straight to global memory.
//     h1, h2, C are padded to multiples of 16 with zero weights; h2 <= 128.
//     The tensor-core math is float16 for both input dtypes (fp32 accumulation): for bfloat16
//     inputs the staged pixels (exact: 0..255) and w2/w3 are converted to float16, which keeps
//     the rounding of w1f and of the hidden activations 8x finer than bfloat16 would (values are
//     clamped to +-65504).
#include <type_traits>

#include "afd_device.cuh"

namespace afd {
namespace cuda {
namespace {

// =============================================================================================
// (a) generic SIMT kernel

constexpr int kGenThreads = 256;

template <typename T>
struct GenCfg {
  using A = typename Num<T>::Acc;
  static constexpr int NB = sizeof(A) == 8 ? 16 : 32;  // blocks per CTA
  static constexpr int NBP = NB + 1;                   // shared pitch
  static constexpr int RJ = NB / 8;                    // blocks per thread in the GEMMs
  static constexpr int RN = 4;                         // outputs per thread in the GEMMs
};

// out[n][j] = act(bias[n] + sum_k W[n][col(k)] * in[k][j]) for n < nout, j < NB (shared [.][NBP]).
// kind 0: relu into shared `sout`; kind 1: sigmoid, written to global memory.
template <typename T, bool ZIGZAG_COLS>
__device__ __forceinline__ void gen_dense(const T* __restrict__ W, const T* __restrict__ bias, int nout, int nin,
                                          const typename Num<T>::Acc* sin, typename Num<T>::Acc* sout,
                                          const int* s_izz, int kind, T* __restrict__ gout, const int64_t* s_obase,
                                          int64_t ostride_c, int nvalid) {
  using A = typename Num<T>::Acc;
  using Cfg = GenCfg<T>;
  constexpr int NB = Cfg::NB, NBP = Cfg::NBP, RJ = Cfg::RJ, RN = Cfg::RN;
  const int ngroups = (nout + RN - 1) / RN;
  for (int task = threadIdx.x; task < ngroups * 8; task += kGenThreads) {
    const int jg = task & 7, ng = task >> 3;
    const int n0 = ng * RN, j0 = jg * RJ;
    A acc[RN][RJ];
    const T* wrow[RN];
#pragma unroll
    for (int r = 0; r < RN; ++r) {
      const int n = min(n0 + r, nout - 1);  // clamp: rows past nout are computed but not stored
      wrow[r] = W + static_cast<int64_t>(n) * nin;
      const A bv = load_acc(bias + n);
#pragma unroll
      for (int c = 0; c < RJ; ++c) acc[r][c] = bv;
    }
    for (int k = 0; k < nin; ++k) {
      const int col = ZIGZAG_COLS ? ((k & ~63) | s_izz[k & 63]) : k;
      A xv[RJ];
#pragma unroll
      for (int c = 0; c < RJ; ++c) xv[c] = sin[k * NBP + j0 + c];
#pragma unroll
      for (int r = 0; r < RN; ++r) {
        const A w = load_acc(wrow[r] + col);
#pragma unroll
        for (int c = 0; c < RJ; ++c) acc[r][c] += w * xv[c];
      }
    }
#pragma unroll
    for (int r = 0; r < RN; ++r) {
      const int n = n0 + r;
      if (n >= nout) continue;
#pragma unroll
      for (int c = 0; c < RJ; ++c) {
        const int j = j0 + c;
        if (kind == 0) {
          sout[n * NBP + j] = acc[r][c] < A(0) ? A(0) : acc[r][c];  // ReLU keeping NaN, as torch.relu
        } else if (j < nvalid) {
          gout[s_obase[j] + n * ostride_c] = Num<T>::from_acc(sigmoid_f(acc[r][c]));
        }
      }
    }
  }
  (void)NB;
}

// P: the image's pixel type, T (the weights' dtype) or uint8_t.
template <typename T, typename P>
__global__ void __launch_bounds__(kGenThreads) fdm_generic_kernel(const P* __restrict__ img, Strides4 ist,
                                                                  const T* __restrict__ w1, const T* __restrict__ b1,
                                                                  const T* __restrict__ w2, const T* __restrict__ b2,
                                                                  const T* __restrict__ w3, const T* __restrict__ b3,
                                                                  T* __restrict__ out, Strides4 ost, int Hb, int Wb,
                                                                  int64_t total, int h1, int h2, int C) {
  using A = typename Num<T>::Acc;
  using Cfg = GenCfg<T>;
  constexpr int NB = Cfg::NB, NBP = Cfg::NBP;
  AFD_DYN_SMEM(smem_raw);
  A* sD = reinterpret_cast<A*>(smem_raw);  // [192][NBP]
  A* sH1 = sD + 192 * NBP;                  // [h1][NBP]
  A* sH2 = sH1 + h1 * NBP;                  // [h2][NBP]
  __shared__ int s_izz[64];
  __shared__ int64_t s_ibase[NB];  // image offset of each block's top-left pixel
  __shared__ int64_t s_obase[NB];  // output offset of each block (channel 0)

  const int tid = threadIdx.x;
  const int64_t g0 = static_cast<int64_t>(blockIdx.x) * NB;
  const int64_t rem = total - g0;
  const int nvalid = rem < NB ? static_cast<int>(rem) : NB;
  if (tid < 64) s_izz[tid] = c_tab.izigzag[tid];
  if (tid < NB) {
    int64_t ib = 0, ob = 0;
    if (tid < nvalid) {
      const int64_t g = g0 + tid;
      const int64_t hbwb = static_cast<int64_t>(Hb) * Wb;
      const int64_t b = g / hbwb;
      const int pos = static_cast<int>(g - b * hbwb);
      const int hb = pos / Wb, wb = pos % Wb;
      ib = b * ist.s[0] + static_cast<int64_t>(hb) * 8 * ist.s[2] + static_cast<int64_t>(wb) * 8 * ist.s[3];
      ob = b * ost.s[0] + hb * ost.s[2] + wb * ost.s[3];
    }
    s_ibase[tid] = ib;
    s_obase[tid] = ob;
  }
  __syncthreads();

  // Pixels: sD[(cc*64 + y*8 + x) * NBP + j] = level-shifted YCbCr.
  for (int i = tid; i < NB * 64; i += kGenThreads) {
    const int p = i & 63, j = i >> 6;
    const int y = p >> 3, x = p & 7;
    A r = 0, g = 0, bl = 0;
    if (j < nvalid) {
      const P* src = img + s_ibase[j] + y * ist.s[2] + x * ist.s[3];
      r = load_pixel<A>(src);
      g = load_pixel<A>(src + ist.s[1]);
      bl = load_pixel<A>(src + 2 * ist.s[1]);
    }
#pragma unroll
    for (int cc = 0; cc < 3; ++cc)
      sD[(cc * 64 + p) * NBP + j] = ycc_coef<A>(cc, 0) * r + ycc_coef<A>(cc, 1) * g + ycc_coef<A>(cc, 2) * bl +
                                    ycc_offset<A>(cc);
  }
  __syncthreads();
  // Row pass: task (cc, y, j), j fastest.
  for (int t = tid; t < 3 * 8 * NB; t += kGenThreads) {
    const int j = t % NB, y = (t / NB) & 7, cc = t / (8 * NB);
    A* base = sD + (cc * 64 + y * 8) * NBP + j;
    dct8<A>(base, NBP, base, NBP);
  }
  __syncthreads();
  // Column pass: task (cc, col, j): natural index u*8 + col.
  for (int t = tid; t < 3 * 8 * NB; t += kGenThreads) {
    const int j = t % NB, col = (t / NB) & 7, cc = t / (8 * NB);
    A* base = sD + (cc * 64 + col) * NBP + j;
    dct8<A>(base, 8 * NBP, base, 8 * NBP);
  }
  __syncthreads();
  gen_dense<T, true>(w1, b1, h1, 192, sD, sH1, s_izz, 0, nullptr, nullptr, 0, nvalid);
  __syncthreads();
  gen_dense<T, false>(w2, b2, h2, h1, sH1, sH2, s_izz, 0, nullptr, nullptr, 0, nvalid);
  __syncthreads();
  gen_dense<T, false>(w3, b3, C, h2, sH2, nullptr, s_izz, 1, out, s_obase, ost.s[1], nvalid);
}

template <typename T, typename P>
cudaError_t launch_generic_typed(const void* img, Strides4 ist, const void* w1, const void* b1, const void* w2,
                                 const void* b2, const void* w3, const void* b3, void* out, Strides4 ost, int B,
                                 int H, int W, int h1, int h2, int C, DType dt, cudaStream_t stream) {
  using Cfg = GenCfg<T>;
  const int Hb = H / 8, Wb = W / 8;
  const int64_t total = static_cast<int64_t>(B) * Hb * Wb;
  if (total == 0 || C == 0) return cudaSuccess;
  const int64_t nctas = (total + Cfg::NB - 1) / Cfg::NB;
  if (nctas > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  const size_t smem = fdm_generic_smem_bytes(h1, h2, dt);
  auto kern = &fdm_generic_kernel<T, P>;
  cudaError_t err = allow_smem(kern, smem);
  if (err != cudaSuccess) return err;
  AFD_LAUNCH(kern, dim3(static_cast<unsigned>(nctas)), dim3(kGenThreads), smem, stream, static_cast<const P*>(img),
             ist, static_cast<const T*>(w1), static_cast<const T*>(b1), static_cast<const T*>(w2),
             static_cast<const T*>(b2), static_cast<const T*>(w3), static_cast<const T*>(b3), static_cast<T*>(out), ost,
             Hb, Wb, total, h1, h2, C);
  return cudaSuccess;
}

// =============================================================================================
// (b) tensor-core path

// Prologue: one CTA (192 threads) per padded hidden unit n. Thread i owns shared-memory pixel slot i
// of a block: NCHW slot i = c*64 + y*8 + x, NHWC slot i = y*24 + x*3 + c.
constexpr float kHalfMax = 65504.f;
__device__ __forceinline__ float clamp_half(float v) { return fminf(fmaxf(v, -kHalfMax), kHalfMax); }

// ReLU, clamped to the float16 range (the hidden activations feed float16 MMAs).
__device__ __forceinline__ float hact(float v, float zero) { return fminf(fmaxf(v, zero), kHalfMax); }

template <typename T>
__global__ void __launch_bounds__(192) fdm_fold_kernel(const T* __restrict__ w1, const T* __restrict__ b1, int h1,
                                                       int nhwc, __half* __restrict__ w1f, float* __restrict__ b1f) {
  __shared__ float s_w[192];
  __shared__ float s_dct[8][8];
  __shared__ int s_zz[64];
  __shared__ float s_err[192];
  __shared__ float s_off[192];
  const int n = blockIdx.x, i = threadIdx.x;
  if (n >= h1) {  // padding rows: zero weights and bias (uniform per CTA)
    w1f[static_cast<int64_t>(n) * 192 + i] = __float2half_rn(0.f);
    if (i == 0) b1f[n] = 0.f;
    return;
  }
  s_w[i] = load_acc(w1 + static_cast<int64_t>(n) * 192 + i);
  if (i < 64) {
    s_dct[i >> 3][i & 7] = c_tab.dct_f[i >> 3][i & 7];
    s_zz[i] = c_tab.zigzag[i];
  }
  __syncthreads();
  int c, y, x;
  if (nhwc) {
    y = i / 24;
    const int e = i % 24;
    x = e / 3;
    c = e % 3;
  } else {
    c = i >> 6;
    y = (i >> 3) & 7;
    x = i & 7;
  }
  // d z1 / d pixel(c,y,x) = sum_cc ycc[cc][c] sum_z w1[n][cc*64+z] dct[u_z][y] dct[v_z][x]
  float sum = 0.f;
  for (int cc = 0; cc < 3; ++cc) {
    float part = 0.f;
    for (int z = 0; z < 64; ++z) {
      const int p = s_zz[z];
      part += s_w[cc * 64 + z] * s_dct[p >> 3][y] * s_dct[p & 7][x];
    }
    sum += c_tab.ycc[cc][c] * part;
  }
  const __half rounded = __float2half_rn(clamp_half(sum));
  w1f[static_cast<int64_t>(n) * 192 + i] = rounded;
  float err = sum - __half2float(rounded);
  // Offset term: coefficient k = cc*64 + z of the constant block off[cc] is off[cc]*S(u_z)*S(v_z),
  // S(u) = sum_y dct[u][y].
  float off;
  {
    const int cc = i >> 6, p = s_zz[i & 63];
    float su = 0.f, sv = 0.f;
    for (int t = 0; t < 8; ++t) {
      su += s_dct[p >> 3][t];
      sv += s_dct[p & 7][t];
    }
    off = s_w[i] * c_tab.ycc_off[cc] * su * sv;
  }
  s_err[i] = err;
  s_off[i] = off;
  __syncthreads();
  if (i == 0) {
    float e = 0.f, o = 0.f;
    for (int t = 0; t < 192; ++t) {
      e += s_err[t];
      o += s_off[t];
    }
    b1f[n] = load_acc(b1 + n) + o + 128.f * e;
  }
}

constexpr int kMmaWarps = 4;
constexpr int kMmaThreads = kMmaWarps * 32;
constexpr int kTileBlocks = kMmaWarps * 32;  // 128 blocks per CTA tile
constexpr int kXS = 192 + 8;                 // shared pitch of a block / a w1f row (elements)
constexpr int kStages = 2;

struct FdmMmaArgs {
  const void* img;
  const void* w1f;
  const float* b1f;
  const void* w2;
  const void* b2;
  const void* w3;
  const void* b3;
  void* out;
  Strides4 ost;
  int H, W, Hb, Wb;
  int total;   // B*Hb*Wb
  int ntiles;  // ceil(total / 128)
  int h1, h2, C;
  int h1p, h2p, cp;
  int nhwc;
};

struct FdmSmem {
  size_t x, w1, w2, w3, b1, b2, b3, total;
};
AFD_HD inline FdmSmem fdm_smem_layout(int h1p, int h2p, int cp) {
  FdmSmem s{};
  size_t o = 0;
  s.x = o;
  o += static_cast<size_t>(kStages) * kTileBlocks * kXS * 2;
  s.w1 = o;
  o += static_cast<size_t>(h1p) * kXS * 2;
  s.w2 = o;
  o += static_cast<size_t>(h2p) * (h1p + 8) * 2;
  s.w3 = o;
  o += static_cast<size_t>(cp) * (h2p + 8) * 2;
  s.b1 = o;
  o += static_cast<size_t>(h1p) * 4;
  s.b2 = o;
  o += static_cast<size_t>(h2p) * 4;
  s.b3 = o;
  o += static_cast<size_t>(cp) * 4;
  s.total = o;
  return s;
}

// Issue the cp.async copies of tile `tile` into stage buffer sx: thread tid copies block m = tid.
template <typename T>
__device__ __forceinline__ void fdm_issue_tile(const FdmMmaArgs& a, int tile, T* sx) {
  const T* img = static_cast<const T*>(a.img);
  const int m = threadIdx.x;
  const int g = tile * kTileBlocks + m;
  const bool valid = g < a.total;
  const T* src0 = img;
  if (valid) {
    const int hbwb = a.Hb * a.Wb;
    const int b = g / hbwb;
    const int pos = g - b * hbwb;
    const int hb = pos / a.Wb, wb = pos - hb * a.Wb;
    if (a.nhwc)
      src0 = img + ((static_cast<int64_t>(b) * a.H + hb * 8) * a.W + wb * 8) * 3;
    else
      src0 = img + (static_cast<int64_t>(b) * 3 * a.H + hb * 8) * a.W + wb * 8;
  }
  T* dst = sx + m * kXS;
  const int64_t plane = static_cast<int64_t>(a.H) * a.W;
#pragma unroll
  for (int q = 0; q < 24; ++q) {
    const T* src;
    if (a.nhwc)  // q = y*3 + s: row y of the block, 8 of its 24 interleaved RGB values
      src = src0 + static_cast<int64_t>(q / 3) * a.W * 3 + (q % 3) * 8;
    else  // q = c*8 + y
      src = src0 + (q >> 3) * plane + static_cast<int64_t>(q & 7) * a.W;
    cp_async16(dst + q * 8, valid ? src : img, valid);
  }
}

template <typename T, int MAXNT2, int NC1>
__global__ void __launch_bounds__(kMmaThreads, 1) fdm_mma_kernel(FdmMmaArgs a) {
  AFD_DYN_SMEM(smem_raw);
  const FdmSmem L = fdm_smem_layout(a.h1p, a.h2p, a.cp);
  using M = __half;  // tensor-core input type (see the header comment)
  T* sx = reinterpret_cast<T*>(smem_raw + L.x);  // raw image pieces as copied (T)
  M* sw1 = reinterpret_cast<M*>(smem_raw + L.w1);
  M* sw2 = reinterpret_cast<M*>(smem_raw + L.w2);
  M* sw3 = reinterpret_cast<M*>(smem_raw + L.w3);
  float* sb1 = reinterpret_cast<float*>(smem_raw + L.b1);
  float* sb2 = reinterpret_cast<float*>(smem_raw + L.b2);
  float* sb3 = reinterpret_cast<float*>(smem_raw + L.b3);
  const int W2S = a.h1p + 8, W3S = a.h2p + 8;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, tig = lane & 3;

  // Prefetch the first tile while the weights are staged.
  int tile = blockIdx.x;
  if (tile < a.ntiles) fdm_issue_tile<T>(a, tile, sx);
  cp_async_commit();

  {
    const M* w1f = static_cast<const M*>(a.w1f);
    const T* w2 = static_cast<const T*>(a.w2);
    const T* w3 = static_cast<const T*>(a.w3);
    const T* b2 = static_cast<const T*>(a.b2);
    const T* b3 = static_cast<const T*>(a.b3);
    for (int i = tid; i < a.h1p * 192; i += kMmaThreads) sw1[(i / 192) * kXS + i % 192] = w1f[i];
    for (int i = tid; i < a.h2p * a.h1p; i += kMmaThreads) {
      const int n = i / a.h1p, k = i % a.h1p;
      const float v = (n < a.h2 && k < a.h1) ? load_acc(w2 + static_cast<int64_t>(n) * a.h1 + k) : 0.f;
      sw2[n * W2S + k] = __float2half_rn(clamp_half(v));
    }
    for (int i = tid; i < a.cp * a.h2p; i += kMmaThreads) {
      const int n = i / a.h2p, k = i % a.h2p;
      const float v = (n < a.C && k < a.h2) ? load_acc(w3 + static_cast<int64_t>(n) * a.h2 + k) : 0.f;
      sw3[n * W3S + k] = __float2half_rn(clamp_half(v));
    }
    for (int i = tid; i < a.h1p; i += kMmaThreads) sb1[i] = a.b1f[i];
    for (int i = tid; i < a.h2p; i += kMmaThreads) sb2[i] = i < a.h2 ? load_acc(b2 + i) : 0.f;
    for (int i = tid; i < a.cp; i += kMmaThreads) sb3[i] = i < a.C ? load_acc(b3 + i) : 0.f;
  }

  T* out = static_cast<T*>(a.out);
  const int nt2 = a.h2p >> 3;  // <= MAXNT2
  const int r0 = warp * 32;    // this warp's rows of the tile
  // ldmatrix lane offsets: A (rows lane&15, k +8 for lanes 16..31); B pair (n +8 for lanes 16..31,
  // k +8 for lanes 8..15 / 24..31).
  const int a_row = lane & 15, a_k = (lane >> 4) << 3;
  const int b_row = ((lane >> 4) << 3) + (lane & 7), b_k = ((lane >> 3) & 1) << 3;

  int stage = 0;
  for (; tile < a.ntiles; tile += gridDim.x) {
    const int next = tile + gridDim.x;
    if (next < a.ntiles) fdm_issue_tile<T>(a, next, sx + (stage ^ 1) * kTileBlocks * kXS);
    cp_async_commit();
    cp_async_wait<1>();
    if constexpr (!std::is_same_v<T, __half>) {
      // bfloat16 pixels -> float16, in place; each thread converts the block it copied.
      uint32_t* row = reinterpret_cast<uint32_t*>(sx + (stage * kTileBlocks + tid) * kXS);
#pragma unroll 8
      for (int q = 0; q < 96; ++q) {
        const uint32_t v = row[q];
        __nv_bfloat16_raw lo, hi;
        lo.x = static_cast<unsigned short>(v & 0xffffu);
        hi.x = static_cast<unsigned short>(v >> 16);
        row[q] = pack2<__half>(clamp_half(__bfloat162float(__nv_bfloat16(lo))),
                               clamp_half(__bfloat162float(__nv_bfloat16(hi))));
      }
    }
    __syncthreads();

    const M* xs = reinterpret_cast<const M*>(sx + stage * kTileBlocks * kXS);
    float acc2[2][MAXNT2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int j = 0; j < MAXNT2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc2[mt][j][e] = 0.f;

    for (int n1 = 0; n1 < a.h1p; n1 += NC1 * 8) {
      const int ntc = min(NC1, (a.h1p - n1) >> 3);  // even
      float acc1[2][NC1][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int j = 0; j < NC1; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc1[mt][j][e] = 0.f;
      // Layer 1: [32 x 192] x [192 x (ntc*8)].
#pragma unroll 2
      for (int kt = 0; kt < 12; ++kt) {
        uint32_t af[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) ldmatrix_x4(af[mt], xs + (r0 + mt * 16 + a_row) * kXS + kt * 16 + a_k);
#pragma unroll
        for (int np = 0; np < NC1 / 2; ++np) {
          if (2 * np < ntc) {
            uint32_t bf[4];
            ldmatrix_x4(bf, sw1 + (n1 + np * 16 + b_row) * kXS + kt * 16 + b_k);
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
              mma16816<M>(acc1[mt][2 * np], af[mt], bf[0], bf[1]);
              mma16816<M>(acc1[mt][2 * np + 1], af[mt], bf[2], bf[3]);
            }
          }
        }
      }
      // Layer-1 epilogue (bias, ReLU) straight into layer-2 A fragments; layer 2 over this k range.
#pragma unroll
      for (int kk = 0; kk < NC1 / 2; ++kk) {
        if (2 * kk < ntc) {
          const int cb = n1 + kk * 16 + 2 * tig;
          const float bb0 = sb1[cb], bb1 = sb1[cb + 1], bb8 = sb1[cb + 8], bb9 = sb1[cb + 9];
          uint32_t af[2][4];
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            const float* c0 = acc1[mt][2 * kk];
            const float* c1 = acc1[mt][2 * kk + 1];
            af[mt][0] = pack2<M>(hact(c0[0] + bb0, 0.f), hact(c0[1] + bb1, 0.f));
            af[mt][1] = pack2<M>(hact(c0[2] + bb0, 0.f), hact(c0[3] + bb1, 0.f));
            af[mt][2] = pack2<M>(hact(c1[0] + bb8, 0.f), hact(c1[1] + bb9, 0.f));
            af[mt][3] = pack2<M>(hact(c1[2] + bb8, 0.f), hact(c1[3] + bb9, 0.f));
          }
#pragma unroll
          for (int np = 0; np < MAXNT2 / 2; ++np) {
            if (2 * np < nt2) {
              uint32_t bf[4];
              ldmatrix_x4(bf, sw2 + (np * 16 + b_row) * W2S + n1 + kk * 16 + b_k);
#pragma unroll
              for (int mt = 0; mt < 2; ++mt) {
                mma16816<M>(acc2[mt][2 * np], af[mt], bf[0], bf[1]);
                mma16816<M>(acc2[mt][2 * np + 1], af[mt], bf[2], bf[3]);
              }
            }
          }
        }
      }
    }

    // Layer-2 epilogue -> layer-3 A fragments.
    uint32_t a3[2][MAXNT2 / 2][4];
#pragma unroll
    for (int kk = 0; kk < MAXNT2 / 2; ++kk) {
      const int cb = kk * 16 + 2 * tig;
      const bool on = 2 * kk < nt2;
      const float bb0 = on ? sb2[cb] : 0.f, bb1 = on ? sb2[cb + 1] : 0.f;
      const float bb8 = on ? sb2[cb + 8] : 0.f, bb9 = on ? sb2[cb + 9] : 0.f;
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const float* c0 = acc2[mt][2 * kk];
        const float* c1 = acc2[mt][2 * kk + 1];
        a3[mt][kk][0] = pack2<M>(hact(c0[0] + bb0, 0.f), hact(c0[1] + bb1, 0.f));
        a3[mt][kk][1] = pack2<M>(hact(c0[2] + bb0, 0.f), hact(c0[3] + bb1, 0.f));
        a3[mt][kk][2] = pack2<M>(hact(c1[0] + bb8, 0.f), hact(c1[1] + bb9, 0.f));
        a3[mt][kk][3] = pack2<M>(hact(c1[2] + bb8, 0.f), hact(c1[3] + bb9, 0.f));
      }
    }

    // Output offsets of this thread's four rows (g, g+8 of each m tile); -1 past the end.
    int64_t obase[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int gb = tile * kTileBlocks + r0 + mt * 16 + h * 8 + g;
        int64_t o = -1;
        if (gb < a.total) {
          const int hbwb = a.Hb * a.Wb;
          const int b = gb / hbwb;
          const int pos = gb - b * hbwb;
          const int hb = pos / a.Wb, wb = pos - hb * a.Wb;
          o = b * a.ost.s[0] + hb * a.ost.s[2] + wb * a.ost.s[3];
        }
        obase[mt][h] = o;
      }

    // Layer 3 in chunks of 32 outputs, sigmoid, store.
    for (int c0 = 0; c0 < a.cp; c0 += 32) {
      const int ntc = min(4, (a.cp - c0) >> 3);  // even
      float acc3[2][4][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc3[mt][j][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < MAXNT2 / 2; ++kk) {
        if (2 * kk < nt2) {
#pragma unroll
          for (int np = 0; np < 2; ++np) {
            if (2 * np < ntc) {
              uint32_t bf[4];
              ldmatrix_x4(bf, sw3 + (c0 + np * 16 + b_row) * W3S + kk * 16 + b_k);
#pragma unroll
              for (int mt = 0; mt < 2; ++mt) {
                mma16816<M>(acc3[mt][2 * np], a3[mt][kk], bf[0], bf[1]);
                mma16816<M>(acc3[mt][2 * np + 1], a3[mt][kk], bf[2], bf[3]);
              }
            }
          }
        }
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j < ntc) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int ch = c0 + j * 8 + 2 * tig + e;
            if (ch < a.C) {
              const float bias = sb3[ch];
              const int64_t co = ch * a.ost.s[1];
#pragma unroll
              for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h)
                  if (obase[mt][h] >= 0)
                    out[obase[mt][h] + co] = Num<T>::from_acc(sigmoid_f(acc3[mt][j][h * 2 + e] + bias));
            }
          }
        }
      }
    }

    __syncthreads();  // everyone is done with this stage before it is refilled
    stage ^= 1;
  }
  cp_async_wait<0>();
}

template <typename T, int MAXNT2, int NC1>
cudaError_t launch_mma_inst(const FdmMmaArgs& args, size_t smem, const DeviceInfo& dev, cudaStream_t stream) {
  auto kern = &fdm_mma_kernel<T, MAXNT2, NC1>;
  cudaError_t err = allow_smem(kern, smem);
  if (err != cudaSuccess) return err;
  const int grid = min(args.ntiles, max(dev.num_sms, 1));
  AFD_LAUNCH(kern, dim3(grid), dim3(kMmaThreads), smem, stream, args);
  return cudaSuccess;
}

template <typename T>
cudaError_t launch_mma_typed(const FdmMmaArgs& args, size_t smem, const DeviceInfo& dev, cudaStream_t stream) {
  if (args.h2p <= 32) return launch_mma_inst<T, 4, 8>(args, smem, dev, stream);
  if (args.h2p <= 64) return launch_mma_inst<T, 8, 8>(args, smem, dev, stream);
  return launch_mma_inst<T, 16, 4>(args, smem, dev, stream);
}

}  // namespace

size_t fdm_generic_smem_bytes(int h1, int h2, DType dt) {
  const size_t acc = dt == DType::kFloat64 ? 8 : 4;
  const size_t nbp = (dt == DType::kFloat64 ? 16 : 32) + 1;
  return (192 + static_cast<size_t>(h1) + h2) * nbp * acc;
}

// The image's pixel type P (T or uint8_t) for the weights' dtype T.
template <typename T>
cudaError_t launch_generic_pixels(const void* img, int img_uint8, Strides4 ist, const void* w1, const void* b1,
                                  const void* w2, const void* b2, const void* w3, const void* b3, void* out,
                                  Strides4 ost, int B, int H, int W, int h1, int h2, int C, DType dt,
                                  cudaStream_t stream) {
  if (img_uint8)
    return launch_generic_typed<T, uint8_t>(img, ist, w1, b1, w2, b2, w3, b3, out, ost, B, H, W, h1, h2, C, dt,
                                            stream);
  return launch_generic_typed<T, T>(img, ist, w1, b1, w2, b2, w3, b3, out, ost, B, H, W, h1, h2, C, dt, stream);
}

cudaError_t launch_block_dct_fdm_generic(const void* img, int img_uint8, Strides4 img_st, const void* w1,
                                         const void* b1, const void* w2, const void* b2, const void* w3,
                                         const void* b3, void* out, Strides4 out_st, int B, int H, int W, int h1,
                                         int h2, int C, DType dt, const DeviceInfo& dev, cudaStream_t stream) {
  (void)dev;
  switch (dt) {
    case DType::kFloat32:
      return launch_generic_pixels<float>(img, img_uint8, img_st, w1, b1, w2, b2, w3, b3, out, out_st, B, H, W, h1,
                                          h2, C, dt, stream);
    case DType::kFloat64:
      return launch_generic_pixels<double>(img, img_uint8, img_st, w1, b1, w2, b2, w3, b3, out, out_st, B, H, W, h1,
                                           h2, C, dt, stream);
    case DType::kFloat16:
      return launch_generic_pixels<__half>(img, img_uint8, img_st, w1, b1, w2, b2, w3, b3, out, out_st, B, H, W, h1,
                                           h2, C, dt, stream);
    case DType::kBFloat16:
      return launch_generic_pixels<__nv_bfloat16>(img, img_uint8, img_st, w1, b1, w2, b2, w3, b3, out, out_st, B, H,
                                                  W, h1, h2, C, dt, stream);
  }
  return cudaErrorInvalidValue;
}

int fdm_pad16(int n) { return (n + 15) / 16 * 16; }

size_t fdm_mma_smem_bytes(int h1, int h2, int C) {
  return fdm_smem_layout(fdm_pad16(h1), fdm_pad16(h2), fdm_pad16(C)).total;
}

bool fdm_mma_supported(int h1, int h2, int C, DType dt, const DeviceInfo& dev) {
  if (dt != DType::kFloat16 && dt != DType::kBFloat16) return false;
  if (h1 < 1 || h2 < 1 || C < 1 || h2 > 128) return false;
  return fdm_mma_smem_bytes(h1, h2, C) <= dev.max_smem_optin;
}

cudaError_t launch_fdm_fold_w1(const void* w1, const void* b1, int h1, int nhwc, void* w1f, float* b1f, DType dt,
                               cudaStream_t stream) {
  __half* w1h = static_cast<__half*>(w1f);
  const int h1p = fdm_pad16(h1);
  if (h1p == 0) return cudaSuccess;
  if (dt == DType::kFloat16) {
    auto kern = &fdm_fold_kernel<__half>;
    AFD_LAUNCH(kern, dim3(h1p), dim3(192), 0, stream, static_cast<const __half*>(w1), static_cast<const __half*>(b1),
               h1, nhwc, w1h, b1f);
    return cudaSuccess;
  }
  if (dt == DType::kBFloat16) {
    auto kern = &fdm_fold_kernel<__nv_bfloat16>;
    AFD_LAUNCH(kern, dim3(h1p), dim3(192), 0, stream, static_cast<const __nv_bfloat16*>(w1),
               static_cast<const __nv_bfloat16*>(b1), h1, nhwc, w1h, b1f);
    return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_block_dct_fdm_mma(const void* img, int nhwc, const void* w1f, const float* b1f, const void* w2,
                                     const void* b2, const void* w3, const void* b3, void* out, Strides4 out_st,
                                     int B, int H, int W, int h1, int h2, int C, DType dt, const DeviceInfo& dev,
                                     cudaStream_t stream) {
  FdmMmaArgs args{};
  args.img = img;
  args.w1f = w1f;
  args.b1f = b1f;
  args.w2 = w2;
  args.b2 = b2;
  args.w3 = w3;
  args.b3 = b3;
  args.out = out;
  args.ost = out_st;
  args.H = H;
  args.W = W;
  args.Hb = H / 8;
  args.Wb = W / 8;
  const int64_t total = static_cast<int64_t>(B) * args.Hb * args.Wb;
  if (total == 0 || C == 0) return cudaSuccess;
  if (total > 0x7fffffffLL - kTileBlocks) return cudaErrorInvalidConfiguration;
  args.total = static_cast<int>(total);
  args.ntiles = static_cast<int>((total + kTileBlocks - 1) / kTileBlocks);
  args.h1 = h1;
  args.h2 = h2;
  args.C = C;
  args.h1p = fdm_pad16(h1);
  args.h2p = fdm_pad16(h2);
  args.cp = fdm_pad16(C);
  args.nhwc = nhwc;
  const size_t smem = fdm_smem_layout(args.h1p, args.h2p, args.cp).total;
  if (dt == DType::kFloat16) return launch_mma_typed<__half>(args, smem, dev, stream);
  if (dt == DType::kBFloat16) return launch_mma_typed<__nv_bfloat16>(args, smem, dev, stream);
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace afd
