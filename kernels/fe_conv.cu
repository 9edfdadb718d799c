// afd::fe_conv on CUDA, one FE-Net block:
//   y[b,c,h,w] = prelu(sum_{ci,kh,kw} weight[c,ci,kh,kw] u[b,ci,h+kh-1,w+kw-1] + bias[c], alpha[c])
//   out = y, or maxpool2x2(y) (stride 2, ceil mode: an odd edge's last window covers what exists;
//   NaN propagates, as torch's max_pool2d)
// u = x, or the decoder's cat(up2(x), skip): channels ci < Cx from x (half resolution) at
// (h>>1, w>>1), the rest from skip at (h, w). The upsampled x, the concatenation, the conv output,
// the PReLU'd and the pre-pool tensors never go to global memory: the loaders read the two sources
// directly and the epilogues apply bias + PReLU (+ the pool) before the one store. Zero padding
// takes part like pixels (0 * NaN/Inf weight = NaN), as in repconv_dedrift.cu. Two kernels:
//
// (a) fe_conv_generic_kernel (every dtype, any strides, any sizes): SIMT direct convolution with
//     repconv_generic_kernel's tiling: CTA = 256 threads -> an 8 x 32 conv-output tile x 32 output
//     channels, input channels in chunks of 8 (halo tile 8 x 10 x 34, pitch 37; weights 8 x 9 x 32
//     in shared memory), thread = 4 pixels (one row) x 8 channels in registers (float; double for
//     float64). Epilogue: bias + PReLU; with the pool, each thread reduces its two column pairs,
//     then the row pair with the thread 8 lanes away (__shfl_xor_sync; the tile origin is even, so
//     no window straddles two threads' rows or two tiles), and even rows store the pooled pixels.
//     Pixels past the edge enter the max as -inf.
//
// (b) fe_conv_mma_kernel (float16 / bfloat16, NHWC): repconv_mma_kernel's implicit GEMM on tensor
//     cores (mma.sync m16n8k16, fp32 accumulation; M = pixels, N = C padded to 16 (<= 64), K = 9 taps
//     x Cin padded to 16). Persistent CTAs of 8 warps, weights resident in shared memory as
//     [tap][co][ci]; conv-output tile 16 x 16 pixels, warp w = rows 2w, 2w+1; the 18 x 18 halo tile
//     of u double-buffered by cp.async in pieces of 8, 4 or 2 channels (16, 8, 4 bytes), each fine
//     pixel taking its x channels from x's pixel (h>>1, w>>1) and the rest from skip's (h, w).
//     Epilogue in fp32: bias + PReLU into a staging tile, then coalesced piece-wide stores. With the
//     pool: a warp's two rows are one row of windows, so the vertical max is in registers and the
//     horizontal one with the lane 4 away (the accumulator's pixel g + 1); the 8 x 8 pooled tile
//     goes through the staging tile to memory.
#include <cmath>

#include "afd_device.cuh"

namespace afd {
namespace cuda {
namespace {

// =============================================================================================
// (a) generic SIMT kernel

constexpr int kGTH = 8, kGTW = 32, kGCOB = 32, kGCIB = 8, kGXP = 37, kGThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kGThreads) fe_conv_generic_kernel(FeConvProblem p, int tiles_w, int tiles_h,
                                                                    int co_blocks) {
  using A = typename Num<T>::Acc;
  __shared__ A sx[kGCIB][kGTH + 2][kGXP];
  __shared__ A sw[kGCIB * 9][kGCOB];
  const T* __restrict__ wt = static_cast<const T*>(p.weight);

  int blk = blockIdx.x;
  const int cob = blk % co_blocks;
  blk /= co_blocks;
  const int tx = blk % tiles_w;
  blk /= tiles_w;
  const int ty = blk % tiles_h;
  const int b = blk / tiles_h;
  const int h0 = ty * kGTH, w0 = tx * kGTW, co0 = cob * kGCOB;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int cg = warp & 3;                          // output channels co0 + cg*8 .. +7
  const int r = ((warp >> 2) << 2) + (lane >> 3);  // output row in the tile, 0..7 (r ^ 1: lane ^ 8)
  const int c4 = (lane & 7) * 4;                    // first of 4 output columns

  A acc[4][8];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int q = 0; q < 8; ++q) acc[i][q] = 0;

  for (int ci0 = 0; ci0 < p.Cin; ci0 += kGCIB) {
    __syncthreads();
    for (int i = tid; i < kGCIB * (kGTH + 2) * (kGTW + 2); i += kGThreads) {
      const int ci = i / ((kGTH + 2) * (kGTW + 2));
      const int rem = i % ((kGTH + 2) * (kGTW + 2));
      const int rr = rem / (kGTW + 2), cc = rem % (kGTW + 2);
      const int h = h0 - 1 + rr, w = w0 - 1 + cc;
      A v = 0;
      if (ci0 + ci < p.Cin && h >= 0 && h < p.H && w >= 0 && w < p.W) v = load_conv_input<T>(p, b, ci0 + ci, h, w);
      sx[ci][rr][cc] = v;
    }
    for (int i = tid; i < kGCIB * 9 * kGCOB; i += kGThreads) {
      const int tap = i % 9, ci = (i / 9) % kGCIB, co = i / (9 * kGCIB);
      A v = 0;
      if (co0 + co < p.C && ci0 + ci < p.Cin)
        v = load_acc(wt + (static_cast<int64_t>(co0 + co) * p.Cin + ci0 + ci) * 9 + tap);
      sw[ci * 9 + tap][co] = v;
    }
    __syncthreads();
    const int ncis = min(kGCIB, p.Cin - ci0);
    for (int ci = 0; ci < ncis; ++ci) {
#pragma unroll
      for (int kh = 0; kh < 3; ++kh) {
        A xv[6];
#pragma unroll
        for (int j = 0; j < 6; ++j) xv[j] = sx[ci][r + kh][c4 + j];
#pragma unroll
        for (int kw = 0; kw < 3; ++kw) {
          A wv[8];
#pragma unroll
          for (int q = 0; q < 8; ++q) wv[q] = sw[ci * 9 + kh * 3 + kw][cg * 8 + q];
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int q = 0; q < 8; ++q) acc[i][q] += xv[i + kw] * wv[q];
        }
      }
    }
  }

  // Epilogue: bias + PReLU (+ pool).
  const T* __restrict__ bias = static_cast<const T*>(p.bias);
  const T* __restrict__ alpha = static_cast<const T*>(p.alpha);
  T* __restrict__ out = static_cast<T*>(p.out);
  const int h = h0 + r;
  if (!p.pool) {
    if (h >= p.H) return;
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      const int co = co0 + cg * 8 + q;
      if (co >= p.C) continue;
      const A bv = bias ? load_acc(bias + co) : A(0);
      const A av = load_acc(alpha + co);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int w = w0 + c4 + i;
        if (w >= p.W) continue;
        out[b * p.out_st.s[0] + co * p.out_st.s[1] + h * p.out_st.s[2] + w * p.out_st.s[3]] =
            Num<T>::from_acc(prelu<A>(acc[i][q] + bv, av));
      }
    }
    return;
  }
  // Pool: every lane takes part in the shuffles (no early exit above them).
  const int Wo = (p.W + 1) >> 1;
  const A ninf = A(-INFINITY);
  const bool row_ok = h < p.H;
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    const int co = co0 + cg * 8 + q;
    const bool co_ok = co < p.C;
    const A bv = (co_ok && bias) ? load_acc(bias + co) : A(0);
    const A av = co_ok ? load_acc(alpha + co) : A(0);
    A m[2];
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int w = w0 + c4 + 2 * k;
      const A v0 = (row_ok && w < p.W) ? prelu<A>(acc[2 * k][q] + bv, av) : ninf;
      const A v1 = (row_ok && w + 1 < p.W) ? prelu<A>(acc[2 * k + 1][q] + bv, av) : ninf;
      m[k] = max_nan(v0, v1);
    }
#pragma unroll
    for (int k = 0; k < 2; ++k) m[k] = max_nan(m[k], __shfl_xor_sync(0xffffffffu, m[k], 8));
    if ((r & 1) == 0 && row_ok && co_ok) {
      const int ph = h >> 1;
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int pw = ((w0 + c4) >> 1) + k;
        if (pw < Wo)
          out[b * p.out_st.s[0] + co * p.out_st.s[1] + ph * p.out_st.s[2] + pw * p.out_st.s[3]] =
              Num<T>::from_acc(m[k]);
      }
    }
  }
}

template <typename T>
cudaError_t launch_generic_typed(const FeConvProblem& p, cudaStream_t stream) {
  const int tiles_w = ceil_div(p.W, kGTW), tiles_h = ceil_div(p.H, kGTH), co_blocks = ceil_div(p.C, kGCOB);
  const int64_t nctas = static_cast<int64_t>(tiles_w) * tiles_h * co_blocks * p.B;
  if (nctas == 0) return cudaSuccess;
  if (nctas > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  auto kern = &fe_conv_generic_kernel<T>;
  AFD_LAUNCH(kern, dim3(static_cast<unsigned>(nctas)), dim3(kGThreads), 0, stream, p, tiles_w, tiles_h, co_blocks);
  return cudaSuccess;
}

// =============================================================================================
// (b) tensor-core kernel (NHWC)

constexpr int kTH = 16, kTW = 16;            // conv-output tile (origin even: pool windows stay inside)
constexpr int kMThreads = 256;               // 8 warps, 2 output rows (= one row of pool windows) each
constexpr int kXR = kTH + 2, kXC = kTW + 2;  // halo tile (pixels)

struct FcLayout {
  size_t w, b, a, x, f, total;  // byte offsets
  int WS;                       // weight row pitch (elements)
  int XS;                       // halo tile pixel pitch (elements)
  int FS;                       // staging pixel pitch (elements)
  int xstage;                   // elements per x stage
};

AFD_HD inline FcLayout fc_layout(int cinp, int cp, int pool) {
  FcLayout L{};
  L.WS = cinp + 8;
  L.XS = cinp + 8;
  L.FS = cp + 8;
  L.xstage = kXR * kXC * L.XS;
  size_t o = 0;
  L.w = o;
  o += static_cast<size_t>(9) * cp * L.WS * 2;
  L.b = o;
  o += static_cast<size_t>(cp) * 4;
  L.a = o;
  o += static_cast<size_t>(cp) * 4;
  L.x = o;
  o += static_cast<size_t>(2) * L.xstage * 2;
  L.f = o;
  o += static_cast<size_t>(pool ? (kTH / 2) * (kTW / 2) : kTH * kTW) * L.FS * 2;
  L.total = o;
  return L;
}

struct FcArgs {
  FeConvProblem p;
  int cinp, cp;
  int tiles_w, tiles_h, ntiles;
  int vin, vout;  // channels per u piece (x and skip), per out piece: 8, 4 or 2
};

struct FcTile {
  int b, h0, w0;
};
__device__ __forceinline__ FcTile fc_tile(const FcArgs& a, int t) {
  FcTile r;
  const int per_img = a.tiles_w * a.tiles_h;
  r.b = t / per_img;
  const int rem = t - r.b * per_img;
  r.h0 = (rem / a.tiles_w) * kTH;
  r.w0 = (rem % a.tiles_w) * kTW;
  return r;
}

// The 18 x 18 halo tile of u into shared memory, [pixel][ci] (ci padded to cinp with zeros).
template <typename T>
__device__ __forceinline__ void fc_issue_x(const FcArgs& a, const FcTile& t, T* xs, const FcLayout& L) {
  const FeConvProblem& p = a.p;
  const T* x = static_cast<const T*>(p.x);
  const T* skip = static_cast<const T*>(p.skip);
  // Without a skip x is (B, H, W, Cin) and Cx == Cin; with one, x is (B, Hx, Wx, Cx) at half
  // resolution, read at (h>>1, w>>1), and skip (B, H, W, Cs) supplies channels Cx..Cin-1.
  const int sh = skip != nullptr ? 1 : 0;
  const int Hx = (p.H + sh) >> sh, Wx = (p.W + sh) >> sh, Cs = p.Cin - p.Cx;
  const int v = a.vin, nj = a.cinp / v;
  for (int i = threadIdx.x; i < kXR * kXC * nj; i += kMThreads) {
    const int j = i % nj, px = i / nj;
    const int h = t.h0 - 1 + px / kXC, w = t.w0 - 1 + px % kXC;
    const int c = j * v;
    const bool inside = c < p.Cin && h >= 0 && h < p.H && w >= 0 && w < p.W;
    const T* src = x;
    if (inside)
      src = c < p.Cx ? x + ((static_cast<int64_t>(t.b) * Hx + (h >> sh)) * Wx + (w >> sh)) * p.Cx + c
                     : skip + ((static_cast<int64_t>(t.b) * p.H + h) * p.W + w) * Cs + (c - p.Cx);
    cp_async_piece(xs + px * L.XS + c, src, inside, v);
  }
}

template <typename T, int MAXNT>
__global__ void __launch_bounds__(kMThreads, (MAXNT <= 4 ? 2 : 1)) fe_conv_mma_kernel(FcArgs a) {
  AFD_DYN_SMEM(smem_raw);
  const FeConvProblem& p = a.p;
  const FcLayout L = fc_layout(a.cinp, a.cp, p.pool);
  T* sw = reinterpret_cast<T*>(smem_raw + L.w);
  float* sb = reinterpret_cast<float*>(smem_raw + L.b);
  float* sa = reinterpret_cast<float*>(smem_raw + L.a);
  T* sx = reinterpret_cast<T*>(smem_raw + L.x);
  T* sf = reinterpret_cast<T*>(smem_raw + L.f);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, tig = lane & 3;

  int tile = blockIdx.x;
  if (tile < a.ntiles) fc_issue_x<T>(a, fc_tile(a, tile), sx, L);
  cp_async_commit();

  // Weights -> [tap][co][ci] (zero padded), bias and alpha -> float (0 in the padding).
  {
    const T* wt = static_cast<const T*>(p.weight);
    const T zero = Num<T>::from_acc(0.f);
    const int n = 9 * a.cp * a.cinp;
    for (int i = tid; i < n; i += kMThreads) {
      const int tap = i % 9, rest = i / 9;
      const int ci = rest % a.cinp, co = rest / a.cinp;
      T v = zero;
      if (co < p.C && ci < p.Cin) v = wt[(static_cast<int64_t>(co) * p.Cin + ci) * 9 + tap];
      sw[(tap * a.cp + co) * L.WS + ci] = v;
    }
    const T* bias = static_cast<const T*>(p.bias);
    const T* alpha = static_cast<const T*>(p.alpha);
    for (int i = tid; i < a.cp; i += kMThreads) {
      sb[i] = (bias != nullptr && i < p.C) ? load_acc(bias + i) : 0.f;
      sa[i] = i < p.C ? load_acc(alpha + i) : 0.f;
    }
  }

  T* out = static_cast<T*>(p.out);
  const int ntn = a.cp >> 3;  // n8 tiles (<= MAXNT)
  const int a_row = lane & 15, a_k = (lane >> 4) << 3;
  const int b_row = ((lane >> 4) << 3) + (lane & 7), b_k = ((lane >> 3) & 1) << 3;
  const int ro0 = warp * 2;  // first output row of this warp
  const int Ho = (p.H + 1) >> 1, Wo = (p.W + 1) >> 1;

  int stage = 0;
  for (; tile < a.ntiles; tile += gridDim.x) {
    const FcTile t = fc_tile(a, tile);
    const int next = tile + gridDim.x;
    if (next < a.ntiles) fc_issue_x<T>(a, fc_tile(a, next), sx + (stage ^ 1) * L.xstage, L);
    cp_async_commit();
    cp_async_wait<1>();  // this tile's u has landed
    __syncthreads();

    const T* xs = sx + stage * L.xstage;
    float acc[2][MAXNT][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int j = 0; j < MAXNT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][j][e] = 0.f;

    for (int tap = 0; tap < 9; ++tap) {
      const int kh = tap / 3, kw = tap - kh * 3;
      const T* wtap = sw + (tap * a.cp + b_row) * L.WS + b_k;
      for (int k0 = 0; k0 < a.cinp; k0 += 16) {
        uint32_t af[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
          ldmatrix_x4(af[mt], xs + ((ro0 + mt + kh) * kXC + a_row + kw) * L.XS + k0 + a_k);
#pragma unroll
        for (int np = 0; np < MAXNT / 2; ++np) {
          if (2 * np < ntn) {
            uint32_t bf[4];
            ldmatrix_x4(bf, wtap + np * 16 * L.WS + k0);
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
              mma16816<T>(acc[mt][2 * np], af[mt], bf[0], bf[1]);
              mma16816<T>(acc[mt][2 * np + 1], af[mt], bf[2], bf[3]);
            }
          }
        }
      }
    }

    // Epilogue 1: bias + PReLU (+ the 2x2 max) in fp32, into the staging tile.
    // acc[mt][j][hh * 2 + e]: pixel (row ro0 + mt, column g + 8 hh), channel j * 8 + 2 tig + e.
    if (!p.pool) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int px = (ro0 + mt) * kTW + g + hh * 8;
#pragma unroll
          for (int j = 0; j < MAXNT; ++j) {
            if (j < ntn) {
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int co = j * 8 + 2 * tig + e;
                sf[px * L.FS + co] = Num<T>::from_acc(prelu<float>(acc[mt][j][hh * 2 + e] + sb[co], sa[co]));
              }
            }
          }
        }
    } else {
      const bool r0_ok = t.h0 + ro0 < p.H, r1_ok = t.h0 + ro0 + 1 < p.H;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int c = g + hh * 8;
        const bool w_ok = t.w0 + c < p.W;
#pragma unroll
        for (int j = 0; j < MAXNT; ++j) {
          if (j < ntn) {  // warp-uniform: every lane reaches the shuffles
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int co = j * 8 + 2 * tig + e;
              const float v0 = (r0_ok && w_ok) ? prelu<float>(acc[0][j][hh * 2 + e] + sb[co], sa[co]) : -INFINITY;
              const float v1 = (r1_ok && w_ok) ? prelu<float>(acc[1][j][hh * 2 + e] + sb[co], sa[co]) : -INFINITY;
              float m = max_nan(v0, v1);
              m = max_nan(m, __shfl_xor_sync(0xffffffffu, m, 4));  // pixel column c ^ 1
              if ((g & 1) == 0) sf[(warp * (kTW / 2) + (c >> 1)) * L.FS + co] = Num<T>::from_acc(m);
            }
          }
        }
      }
    }
    __syncthreads();
    // Epilogue 2: coalesced stores (NHWC pieces of vout channels).
    {
      const int v = a.vout, nj = p.C / v;
      if (!p.pool) {
        for (int i = tid; i < kTH * kTW * nj; i += kMThreads) {
          const int j = i % nj, px = i / nj;
          const int h = t.h0 + px / kTW, w = t.w0 + px % kTW;
          if (h < p.H && w < p.W)
            copy_piece(out + ((static_cast<int64_t>(t.b) * p.H + h) * p.W + w) * p.C + j * v, sf + px * L.FS + j * v,
                       v);
        }
      } else {
        constexpr int kPW = kTW / 2;
        for (int i = tid; i < (kTH / 2) * kPW * nj; i += kMThreads) {
          const int j = i % nj, px = i / nj;
          const int ph = (t.h0 >> 1) + px / kPW, pw = (t.w0 >> 1) + px % kPW;
          if (ph < Ho && pw < Wo)
            copy_piece(out + ((static_cast<int64_t>(t.b) * Ho + ph) * Wo + pw) * p.C + j * v, sf + px * L.FS + j * v,
                       v);
        }
      }
    }
    __syncthreads();  // staging and this x stage are free again
    stage ^= 1;
  }
  cp_async_wait<0>();
}

template <typename T, int MAXNT>
cudaError_t launch_mma_inst(const FcArgs& args, const DeviceInfo& dev, cudaStream_t stream) {
  const size_t smem = fc_layout(args.cinp, args.cp, args.p.pool).total;
  auto kern = &fe_conv_mma_kernel<T, MAXNT>;
  cudaError_t err = allow_smem(kern, smem);
  if (err != cudaSuccess) return err;
  int per_sm = 1;
#ifndef AFD_EMU
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, kMThreads, smem);
  if (err != cudaSuccess) return err;
  if (per_sm < 1) return cudaErrorInvalidConfiguration;
#endif
  const int64_t want = static_cast<int64_t>(per_sm) * (dev.num_sms > 0 ? dev.num_sms : 1);
  const int grid = static_cast<int>(want < args.ntiles ? want : args.ntiles);
  AFD_LAUNCH(kern, dim3(grid), dim3(kMThreads), smem, stream, args);
  return cudaSuccess;
}

template <typename T>
cudaError_t launch_mma_typed(const FcArgs& args, const DeviceInfo& dev, cudaStream_t stream) {
  if (args.cp <= 32) return launch_mma_inst<T, 4>(args, dev, stream);
  return launch_mma_inst<T, 8>(args, dev, stream);
}

inline int pad16(int n) { return (n + 15) / 16 * 16; }

inline int fc_vin(const FeConvProblem& p) {
  return p.skip != nullptr ? nhwc_vec(p.Cx, p.Cin - p.Cx) : nhwc_vec(p.Cin, 0);
}

}  // namespace

cudaError_t launch_fe_conv_generic(const FeConvProblem& p, DType dt, cudaStream_t stream) {
  switch (dt) {
    case DType::kFloat32:
      return launch_generic_typed<float>(p, stream);
    case DType::kFloat64:
      return launch_generic_typed<double>(p, stream);
    case DType::kFloat16:
      return launch_generic_typed<__half>(p, stream);
    case DType::kBFloat16:
      return launch_generic_typed<__nv_bfloat16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

bool fe_conv_mma_supported(const FeConvProblem& p, DType dt, const DeviceInfo& dev) {
  if (dt != DType::kFloat16 && dt != DType::kBFloat16) return false;
  if (p.Cin < 1 || p.C < 1 || p.C > 64) return false;
  if (fc_vin(p) == 0 || nhwc_vec(p.C, 0) == 0) return false;
  return fc_layout(pad16(p.Cin), pad16(p.C), p.pool).total <= dev.max_smem_optin;
}

cudaError_t launch_fe_conv_mma(const FeConvProblem& p, DType dt, const DeviceInfo& dev, cudaStream_t stream) {
  FcArgs args{};
  args.p = p;
  args.cinp = pad16(p.Cin);
  args.cp = pad16(p.C);
  args.tiles_w = ceil_div(p.W, kTW);
  args.tiles_h = ceil_div(p.H, kTH);
  args.vin = fc_vin(p);
  args.vout = nhwc_vec(p.C, 0);
  if (args.vin == 0 || args.vout == 0) return cudaErrorInvalidValue;
  const int64_t ntiles = static_cast<int64_t>(args.tiles_w) * args.tiles_h * p.B;
  if (ntiles == 0) return cudaSuccess;
  if (ntiles > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  args.ntiles = static_cast<int>(ntiles);
  if (dt == DType::kFloat16) return launch_mma_typed<__half>(args, dev, stream);
  if (dt == DType::kBFloat16) return launch_mma_typed<__nv_bfloat16>(args, dev, stream);
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace afd
