// afd::repconv_dedrift on CUDA:
//   out[b,c,h,w] = act(feat[b,c,h,w] + (sum_{ci,kh,kw} weight[c,ci,kh,kw] x[b,ci,h+kh-1,w+kw-1] + bias[c])
//                      * fdm[b, c, h / (Hf/Hb), w / (Wf/Wb)])
// The convolution output and the upsampled FDM never go to global memory. The conv reads x, or
// with a skip the FE-Net decoder's cat(up2(x), skip) straight from its two sources (x at half
// resolution, read at (h>>1, w>>1) for channels < Cx; skip at (h, w) for the rest): neither the
// upsampled x nor the concatenation goes to memory. Two kernels:
//
// (a) repconv_generic_kernel (every dtype, any strides, any sizes): SIMT direct convolution.
//     CTA = 256 threads -> an 8 x 32 output tile x 32 output channels. Input channels go in
//     chunks of 8: the 8 x 10 x 34 halo tile of x (row pitch 37: conflict-free) and the
//     8 x 9 x 32 weights are staged in shared memory; each thread accumulates 4 pixels x 8 output
//     channels in registers (float, double for float64), reusing each loaded row of 6 inputs for
//     the 3 horizontal taps. Fused epilogue (bias, FDM cell, feat, act) straight to global memory.
//
// (b) repconv_mma_kernel (float16 / bfloat16): implicit GEMM on tensor cores (mma.sync m16n8k16,
//     fp32 accumulation), M = output pixels, N = output channels (C padded to 16, <= 64),
//     K = 9 taps x Cin (padded to 16). Persistent CTAs (256 threads = 8 warps), the whole weight
//     tensor resident in shared memory as [tap][co][ci] (ldmatrix B operand, rows padded by 8
//     elements). Output tile 16 x 16 pixels: warp w owns output rows 2w, 2w+1 (two m16 tiles) x all
//     channels (acc: 2 x C/8 x 4 fp32 registers). The x halo tile (18 x 18 pixels) is double-buffered
//     with cp.async: NHWC as [pixel][ci] in pieces of 8, 4 or 2 channels (16, 8 or 4 bytes; the
//     largest dividing Cx and Cs; each fine pixel of the tile takes its x channels from x's pixel
//     (h>>1, w>>1)) (A operand via ldmatrix), NCHW as [ci][row][col] in 4-byte pieces (x's channels
//     under a skip: one 16-bit load stored to both columns of the pair) (A operand gathered with
//     16-bit shared loads). feat for the tile is fetched with cp.async into a staging buffer while
//     the MMAs run; the epilogue combines accumulators, bias, FDM (read through L1) and feat in
//     fp32, applies act, writes the result back into the staging buffer and the CTA then stores it
//     with coalesced piece-wide (NHWC: 16, 8 or 4 bytes) or 4-byte (NCHW) stores.
#include "afd_device.cuh"

namespace afd {
namespace cuda {
namespace {

// =============================================================================================
// (a) generic SIMT kernel

constexpr int kGTH = 8, kGTW = 32, kGCOB = 32, kGCIB = 8, kGXP = 37, kGThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kGThreads) repconv_generic_kernel(RepconvProblem p, int tiles_w, int tiles_h,
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
  const int r = ((warp >> 2) << 2) + (lane >> 3);  // output row in the tile, 0..7
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
      if (ci0 + ci < p.Cin && h >= 0 && h < p.Hf && w >= 0 && w < p.Wf)
        v = load_conv_input<T>(p, b, ci0 + ci, h, w);  // x, or cat(up2(x), skip)
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

  // Epilogue.
  const T* __restrict__ bias = static_cast<const T*>(p.bias);
  const T* __restrict__ fdm = static_cast<const T*>(p.fdm);
  const T* __restrict__ feat = static_cast<const T*>(p.feat);
  T* __restrict__ out = static_cast<T*>(p.out);
  const int rh = p.Hf / p.Hb, rw = p.Wf / p.Wb;
  const int h = h0 + r;
  if (h >= p.Hf) return;
  const int fh = h / rh;
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    const int co = co0 + cg * 8 + q;
    if (co >= p.C) continue;
    const A bv = bias ? load_acc(bias + co) : A(0);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int w = w0 + c4 + i;
      if (w >= p.Wf) continue;
      const int fw = w / rw;
      const A f = load_acc(fdm + b * p.fdm_st.s[0] + co * p.fdm_st.s[1] + fh * p.fdm_st.s[2] + fw * p.fdm_st.s[3]);
      const A ft =
          load_acc(feat + b * p.feat_st.s[0] + co * p.feat_st.s[1] + h * p.feat_st.s[2] + w * p.feat_st.s[3]);
      const A v = apply_act<A>(ft + (acc[i][q] + bv) * f, p.act);
      out[b * p.out_st.s[0] + co * p.out_st.s[1] + h * p.out_st.s[2] + w * p.out_st.s[3]] = Num<T>::from_acc(v);
    }
  }
}

template <typename T>
cudaError_t launch_generic_typed(const RepconvProblem& p, cudaStream_t stream) {
  const int tiles_w = ceil_div(p.Wf, kGTW), tiles_h = ceil_div(p.Hf, kGTH), co_blocks = ceil_div(p.C, kGCOB);
  const int64_t nctas = static_cast<int64_t>(tiles_w) * tiles_h * co_blocks * p.B;
  if (nctas == 0) return cudaSuccess;
  if (nctas > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  auto kern = &repconv_generic_kernel<T>;
  AFD_LAUNCH(kern, dim3(static_cast<unsigned>(nctas)), dim3(kGThreads), 0, stream, p, tiles_w, tiles_h, co_blocks);
  return cudaSuccess;
}

// =============================================================================================
// (b) tensor-core kernel

constexpr int kTH = 16, kTW = 16;          // output tile
constexpr int kMThreads = 256;             // 8 warps, 2 output rows each
constexpr int kXR = kTH + 2, kXC = kTW + 2;  // NHWC halo tile (pixels)
constexpr int kNCC = kTW + 4;              // NCHW tile columns: w0-2 .. w0+kTW+1 (4-byte pairs)
constexpr int kNCS = kXR * kNCC;           // NCHW x tile channel stride (elements)
constexpr int kFCS = kTH * kTW + 8;        // NCHW staging channel stride (elements)

struct RcLayout {
  size_t w, b, x, f, total;  // byte offsets
  int WS;                    // weight row pitch (elements)
  int XS;                    // NHWC pixel pitch (elements)
  int FS;                    // NHWC staging pixel pitch (elements)
  int xstage;                // elements per x stage
};

AFD_HD inline RcLayout rc_layout(int cinp, int cp, int nhwc) {
  RcLayout L{};
  L.WS = cinp + 8;
  L.XS = cinp + 8;
  L.FS = cp + 8;
  L.xstage = nhwc ? kXR * kXC * L.XS : cinp * kNCS;
  size_t o = 0;
  L.w = o;
  o += static_cast<size_t>(9) * cp * L.WS * 2;
  L.b = o;
  o += static_cast<size_t>(cp) * 4;
  L.x = o;
  o += static_cast<size_t>(2) * L.xstage * 2;
  L.f = o;
  o += (nhwc ? static_cast<size_t>(kTH * kTW) * L.FS : static_cast<size_t>(cp) * kFCS) * 2;
  L.total = o;
  return L;
}

struct RcArgs {
  RepconvProblem p;
  int cinp, cp;
  int tiles_w, tiles_h, ntiles;
  int vin, vout;  // NHWC: channels per x/skip piece, per feat/out piece (8, 4 or 2)
};

struct RcTile {
  int b, h0, w0;
};
__device__ __forceinline__ RcTile rc_tile(const RcArgs& a, int t) {
  RcTile r;
  const int per_img = a.tiles_w * a.tiles_h;
  r.b = t / per_img;
  const int rem = t - r.b * per_img;
  r.h0 = (rem / a.tiles_w) * kTH;
  r.w0 = (rem % a.tiles_w) * kTW;
  return r;
}

template <typename T, bool NHWC>
__device__ __forceinline__ void rc_issue_x(const RcArgs& a, const RcTile& t, T* xs, const RcLayout& L) {
  const RepconvProblem& p = a.p;
  const T* x = static_cast<const T*>(p.x);
  const T* skip = static_cast<const T*>(p.skip);
  // Without a skip x is (B, Hf, Wf, Cin) and Cx == Cin; with one, x is (B, Hx, Wx, Cx) at half
  // resolution, read at (h>>1, w>>1), and skip (B, Hf, Wf, Cs) supplies channels Cx..Cin-1.
  const int sh = skip != nullptr ? 1 : 0;
  const int Hx = (p.Hf + sh) >> sh, Wx = (p.Wf + sh) >> sh, Cs = p.Cin - p.Cx;
  if (NHWC) {
    const int v = a.vin, nj = a.cinp / v;
    for (int i = threadIdx.x; i < kXR * kXC * nj; i += kMThreads) {
      const int j = i % nj, px = i / nj;
      const int h = t.h0 - 1 + px / kXC, w = t.w0 - 1 + px % kXC;
      const int c = j * v;
      const bool inside = c < p.Cin && h >= 0 && h < p.Hf && w >= 0 && w < p.Wf;
      const T* src = x;
      if (inside)
        src = c < p.Cx ? x + ((static_cast<int64_t>(t.b) * Hx + (h >> sh)) * Wx + (w >> sh)) * p.Cx + c
                       : skip + ((static_cast<int64_t>(t.b) * p.Hf + h) * p.Wf + w) * Cs + (c - p.Cx);
      cp_async_piece(xs + px * L.XS + c, src, inside, v);
    }
  } else {
    for (int i = threadIdx.x; i < a.cinp * kXR * (kNCC / 2); i += kMThreads) {
      const int cc = i % (kNCC / 2), rest = i / (kNCC / 2);
      const int r = rest % kXR, ci = rest / kXR;
      const int h = t.h0 - 1 + r, w = t.w0 - 2 + 2 * cc;  // w even: (w, w+1) share x's column w>>1
      const bool inside = ci < p.Cin && h >= 0 && h < p.Hf && w >= 0 && w < p.Wf;
      T* dst = xs + ci * kNCS + r * kNCC + 2 * cc;
      if (sh && inside && ci < p.Cx) {
        // up2(x): one element for both columns of the pair (a synchronous load, duplicated).
        const uint16_t e = *reinterpret_cast<const uint16_t*>(
            x + ((static_cast<int64_t>(t.b) * p.Cx + ci) * Hx + (h >> 1)) * Wx + (w >> 1));
        *reinterpret_cast<uint32_t*>(dst) = pack_raw(e, e);
        continue;
      }
      const T* src = x;
      if (inside)
        src = sh ? skip + ((static_cast<int64_t>(t.b) * Cs + (ci - p.Cx)) * p.Hf + h) * p.Wf + w
                 : x + ((static_cast<int64_t>(t.b) * p.Cin + ci) * p.Hf + h) * p.Wf + w;
      cp_async4(dst, src, inside);
    }
  }
}

template <typename T, bool NHWC>
__device__ __forceinline__ void rc_issue_feat(const RcArgs& a, const RcTile& t, T* sf, const RcLayout& L) {
  const RepconvProblem& p = a.p;
  const T* feat = static_cast<const T*>(p.feat);
  if (NHWC) {
    const int v = a.vout, nj = a.cp / v;
    for (int i = threadIdx.x; i < kTH * kTW * nj; i += kMThreads) {
      const int j = i % nj, px = i / nj;
      const int h = t.h0 + px / kTW, w = t.w0 + px % kTW;
      const bool valid = j * v < p.C && h < p.Hf && w < p.Wf;
      const T* src = valid ? feat + ((static_cast<int64_t>(t.b) * p.Hf + h) * p.Wf + w) * p.C + j * v : feat;
      cp_async_piece(sf + px * L.FS + j * v, src, valid, v);
    }
  } else {
    for (int i = threadIdx.x; i < a.cp * kTH * (kTW / 2); i += kMThreads) {
      const int cc = i % (kTW / 2), rest = i / (kTW / 2);
      const int r = rest % kTH, co = rest / kTH;
      const int h = t.h0 + r, w = t.w0 + 2 * cc;
      const bool valid = co < p.C && h < p.Hf && w < p.Wf;
      const T* src = valid ? feat + ((static_cast<int64_t>(t.b) * p.C + co) * p.Hf + h) * p.Wf + w : feat;
      cp_async4(sf + co * kFCS + r * kTW + 2 * cc, src, valid);
    }
  }
}

template <typename T, int MAXNT, bool NHWC>
__global__ void __launch_bounds__(kMThreads, (MAXNT <= 4 ? 2 : 1)) repconv_mma_kernel(RcArgs a) {
  AFD_DYN_SMEM(smem_raw);
  const RepconvProblem& p = a.p;
  const RcLayout L = rc_layout(a.cinp, a.cp, NHWC ? 1 : 0);
  T* sw = reinterpret_cast<T*>(smem_raw + L.w);
  float* sb = reinterpret_cast<float*>(smem_raw + L.b);
  T* sx = reinterpret_cast<T*>(smem_raw + L.x);
  T* sf = reinterpret_cast<T*>(smem_raw + L.f);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, tig = lane & 3;

  int tile = blockIdx.x;
  if (tile < a.ntiles) rc_issue_x<T, NHWC>(a, rc_tile(a, tile), sx, L);
  cp_async_commit();

  // Weights -> [tap][co][ci] (zero padded), bias -> float.
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
    for (int i = tid; i < a.cp; i += kMThreads) sb[i] = (bias != nullptr && i < p.C) ? load_acc(bias + i) : 0.f;
  }

  const T* fdm = static_cast<const T*>(p.fdm);
  T* out = static_cast<T*>(p.out);
  const int ntn = a.cp >> 3;  // n8 tiles (<= MAXNT)
  const int rh = p.Hf / p.Hb, rw = p.Wf / p.Wb;
  const int a_row = lane & 15, a_k = (lane >> 4) << 3;
  const int b_row = ((lane >> 4) << 3) + (lane & 7), b_k = ((lane >> 3) & 1) << 3;
  const int ro0 = warp * 2;  // first output row of this warp

  int stage = 0;
  for (; tile < a.ntiles; tile += gridDim.x) {
    const RcTile t = rc_tile(a, tile);
    rc_issue_feat<T, NHWC>(a, t, sf, L);
    cp_async_commit();
    const int next = tile + gridDim.x;
    if (next < a.ntiles) rc_issue_x<T, NHWC>(a, rc_tile(a, next), sx + (stage ^ 1) * L.xstage, L);
    cp_async_commit();
    cp_async_wait<2>();  // this tile's x has landed
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
        if (NHWC) {
#pragma unroll
          for (int mt = 0; mt < 2; ++mt)
            ldmatrix_x4(af[mt], xs + ((ro0 + mt + kh) * kXC + a_row + kw) * L.XS + k0 + a_k);
        } else {
          const uint16_t* xu = reinterpret_cast<const uint16_t*>(xs);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            const uint16_t* q = xu + (k0 + 2 * tig) * kNCS + (ro0 + mt + kh) * kNCC + g + kw + 1;
            af[mt][0] = pack_raw(q[0], q[kNCS]);
            af[mt][1] = pack_raw(q[8], q[kNCS + 8]);
            af[mt][2] = pack_raw(q[8 * kNCS], q[9 * kNCS]);
            af[mt][3] = pack_raw(q[8 * kNCS + 8], q[9 * kNCS + 8]);
          }
        }
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

    cp_async_wait<1>();  // this tile's feat has landed
    __syncthreads();
    // Epilogue 1: v = act(feat + (acc + bias) * fdm) into the staging buffer (same slots as feat).
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const int ro = ro0 + mt, h = t.h0 + ro;
      if (h >= p.Hf) continue;
      const int fh = h / rh;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int c = g + hh * 8, w = t.w0 + c;
        if (w >= p.Wf) continue;
        const T* fb = fdm + t.b * p.fdm_st.s[0] + fh * p.fdm_st.s[2] + (w / rw) * p.fdm_st.s[3];
        const int px = ro * kTW + c;
#pragma unroll
        for (int j = 0; j < MAXNT; ++j) {
          if (j < ntn) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int co = j * 8 + 2 * tig + e;
              if (co < p.C) {
                T* sp = NHWC ? sf + px * L.FS + co : sf + co * kFCS + px;
                const float v = Num<T>::to_acc(*sp) + (acc[mt][j][hh * 2 + e] + sb[co]) * load_acc(fb + co * p.fdm_st.s[1]);
                *sp = Num<T>::from_acc(apply_act<float>(v, p.act));
              }
            }
          }
        }
      }
    }
    __syncthreads();
    // Epilogue 2: coalesced stores.
    if (NHWC) {
      const int v = a.vout, nj = p.C / v;
      for (int i = tid; i < kTH * kTW * nj; i += kMThreads) {
        const int j = i % nj, px = i / nj;
        const int h = t.h0 + px / kTW, w = t.w0 + px % kTW;
        if (h < p.Hf && w < p.Wf)
          copy_piece(out + ((static_cast<int64_t>(t.b) * p.Hf + h) * p.Wf + w) * p.C + j * v, sf + px * L.FS + j * v,
                     v);
      }
    } else {
      for (int i = tid; i < p.C * kTH * (kTW / 2); i += kMThreads) {
        const int cc = i % (kTW / 2), rest = i / (kTW / 2);
        const int r = rest % kTH, co = rest / kTH;
        const int h = t.h0 + r, w = t.w0 + 2 * cc;
        if (h < p.Hf && w < p.Wf)
          *reinterpret_cast<uint32_t*>(out + ((static_cast<int64_t>(t.b) * p.C + co) * p.Hf + h) * p.Wf + w) =
              *reinterpret_cast<const uint32_t*>(sf + co * kFCS + r * kTW + 2 * cc);
      }
    }
    __syncthreads();  // staging and this x stage are free again
    stage ^= 1;
  }
  cp_async_wait<0>();
}

template <typename T, int MAXNT, bool NHWC>
cudaError_t launch_mma_inst(const RcArgs& args, const DeviceInfo& dev, cudaStream_t stream) {
  const size_t smem = rc_layout(args.cinp, args.cp, NHWC ? 1 : 0).total;
  auto kern = &repconv_mma_kernel<T, MAXNT, NHWC>;
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

template <typename T, bool NHWC>
cudaError_t launch_mma_typed(const RcArgs& args, const DeviceInfo& dev, cudaStream_t stream) {
  if (args.cp <= 32) return launch_mma_inst<T, 4, NHWC>(args, dev, stream);
  return launch_mma_inst<T, 8, NHWC>(args, dev, stream);
}

inline int pad16(int n) { return (n + 15) / 16 * 16; }

inline int rc_vin(const RepconvProblem& p) {
  return p.skip != nullptr ? nhwc_vec(p.Cx, p.Cin - p.Cx) : nhwc_vec(p.Cin, 0);
}

}  // namespace

int nhwc_vec(int a, int b) {
  for (int v = 8; v >= 2; v >>= 1)
    if (a % v == 0 && b % v == 0) return v;
  return 0;
}

cudaError_t launch_repconv_dedrift_generic(const RepconvProblem& p, DType dt, cudaStream_t stream) {
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

bool repconv_mma_supported(const RepconvProblem& p, int nhwc, DType dt, const DeviceInfo& dev) {
  if (dt != DType::kFloat16 && dt != DType::kBFloat16) return false;
  if (p.Cin < 1 || p.C < 1 || p.C > 64) return false;
  if (nhwc) {
    if (rc_vin(p) == 0 || nhwc_vec(p.C, 0) == 0) return false;
  } else {
    if (p.Wf % 2 != 0) return false;
  }
  return rc_layout(pad16(p.Cin), pad16(p.C), nhwc).total <= dev.max_smem_optin;
}

cudaError_t launch_repconv_dedrift_mma(const RepconvProblem& p, int nhwc, DType dt, const DeviceInfo& dev,
                                       cudaStream_t stream) {
  RcArgs args{};
  args.p = p;
  args.cinp = pad16(p.Cin);
  args.cp = pad16(p.C);
  args.tiles_w = ceil_div(p.Wf, kTW);
  args.tiles_h = ceil_div(p.Hf, kTH);
  args.vin = nhwc ? rc_vin(p) : 2;
  args.vout = nhwc ? nhwc_vec(p.C, 0) : 2;
  const int64_t ntiles = static_cast<int64_t>(args.tiles_w) * args.tiles_h * p.B;
  if (ntiles == 0) return cudaSuccess;
  if (ntiles > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  args.ntiles = static_cast<int>(ntiles);
  if (dt == DType::kFloat16)
    return nhwc ? launch_mma_typed<__half, true>(args, dev, stream) : launch_mma_typed<__half, false>(args, dev, stream);
  if (dt == DType::kBFloat16)
    return nhwc ? launch_mma_typed<__nv_bfloat16, true>(args, dev, stream)
                : launch_mma_typed<__nv_bfloat16, false>(args, dev, stream);
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace afd
