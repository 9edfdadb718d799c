// Device-side helpers shared by kernels/*.cu: number traits (load/convert, float32 accumulation),
// the DCT / colour / zig-zag tables in __constant__ memory (built at compile time from
// csrc/afd_constants.h), the 8-point DCT of both block-DCT kernels, and thin PTX wrappers
// (cp.async, ldmatrix, mma.sync).
//
// When AFD_EMU is defined (a CPU emulation harness compiles these files as plain C++), the PTX
// wrappers and the launch macro are supplied by that harness instead.
#pragma once
#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "afd_constants.h"
#include "afd_cuda.cuh"

namespace afd {
namespace cuda {

// ---------------------------------------------------------------------------------------------
// Compile-time tables.
struct Tables {
  float dct_f[8][8];   // kDct as float
  double dct_d[8][8];  // kDct
  float ycc[3][3];     // RGB -> YCbCr
  float ycc_off[3];    // level-shifted offsets (-128, 0, 0)
  double ycc_d[3][3];
  double ycc_off_d[3];
  int zigzag[64];      // zig-zag index -> row*8+col
  int izigzag[64];     // row*8+col -> zig-zag index
};

constexpr Tables make_tables() {
  Tables t{};
  for (int u = 0; u < 8; ++u)
    for (int x = 0; x < 8; ++x) {
      t.dct_f[u][x] = static_cast<float>(kDct[u][x]);
      t.dct_d[u][x] = kDct[u][x];
    }
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      t.ycc[i][j] = static_cast<float>(kYCbCr[i][j]);
      t.ycc_d[i][j] = static_cast<double>(kYCbCr[i][j]);
    }
    t.ycc_off[i] = static_cast<float>(kYCbCrShiftedOffset[i]);
    t.ycc_off_d[i] = static_cast<double>(kYCbCrShiftedOffset[i]);
  }
  for (int k = 0; k < 64; ++k) {
    t.zigzag[k] = kZigzag[k];
    t.izigzag[kZigzag[k]] = k;
  }
  return t;
}

namespace {
__constant__ Tables c_tab = make_tables();
}  // namespace

template <typename A>
__device__ __forceinline__ A dct_coef(int u, int x);
template <>
__device__ __forceinline__ float dct_coef<float>(int u, int x) {
  return c_tab.dct_f[u][x];
}
template <>
__device__ __forceinline__ double dct_coef<double>(int u, int x) {
  return c_tab.dct_d[u][x];
}

// RGB -> level-shifted YCbCr plane cc of one pixel, in the accumulation type.
template <typename A>
__device__ __forceinline__ A ycc_coef(int cc, int c);
template <>
__device__ __forceinline__ float ycc_coef<float>(int cc, int c) {
  return c_tab.ycc[cc][c];
}
template <>
__device__ __forceinline__ double ycc_coef<double>(int cc, int c) {
  return c_tab.ycc_d[cc][c];
}
template <typename A>
__device__ __forceinline__ A ycc_offset(int cc);
template <>
__device__ __forceinline__ float ycc_offset<float>(int cc) {
  return c_tab.ycc_off[cc];
}
template <>
__device__ __forceinline__ double ycc_offset<double>(int cc) {
  return c_tab.ycc_off_d[cc];
}

// One 8-point DCT-II, the building block of every separable 8x8 DCT here (a row pass, then a
// column pass): out[u * out_stride] = sum_x kDct[u][x] * in[x * in_stride]. All 8 inputs are read
// before any output is written, so in == out (in place) is fine.
template <typename A>
__device__ __forceinline__ void dct8(const A* in, int in_stride, A* out, int out_stride) {
  A v[8];
#pragma unroll
  for (int x = 0; x < 8; ++x) v[x] = in[x * in_stride];
#pragma unroll
  for (int u = 0; u < 8; ++u) {
    A s = 0;
#pragma unroll
    for (int x = 0; x < 8; ++x) s += dct_coef<A>(u, x) * v[x];
    out[u * out_stride] = s;
  }
}

// ---------------------------------------------------------------------------------------------
// Number traits: storage type T, accumulation type Acc (float for the half types).
template <typename T>
struct Num;
template <>
struct Num<float> {
  using Acc = float;
  static __device__ __forceinline__ float to_acc(float v) { return v; }
  static __device__ __forceinline__ float from_acc(float v) { return v; }
};
template <>
struct Num<double> {
  using Acc = double;
  static __device__ __forceinline__ double to_acc(double v) { return v; }
  static __device__ __forceinline__ double from_acc(double v) { return v; }
};
template <>
struct Num<__half> {
  using Acc = float;
  static __device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_acc(float v) { return __float2half_rn(v); }
};
template <>
struct Num<__nv_bfloat16> {
  using Acc = float;
  static __device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_acc(float v) { return __float2bfloat16_rn(v); }
};

template <typename T>
__device__ __forceinline__ typename Num<T>::Acc load_acc(const T* p) {
#ifdef AFD_EMU
  return Num<T>::to_acc(*p);
#else
  return Num<T>::to_acc(__ldg(p));
#endif
}

// One image pixel in the accumulation type A (Num<T>::Acc of the kernel's dtype T): an image of
// dtype T (P == T) through load_acc, a uint8 image (P == uint8_t, 0..255) converted exactly.
template <typename A, typename P>
__device__ __forceinline__ A load_pixel(const P* p) {
  if constexpr (std::is_same_v<P, uint8_t>) {
#ifdef AFD_EMU
    return static_cast<A>(*p);
#else
    return static_cast<A>(__ldg(p));
#endif
  } else {
    return load_acc(p);
  }
}

template <typename A>
__device__ __forceinline__ A apply_act(A v, int act) {
  // act: an afd::Act code (csrc/afd_constants.h). NaN-propagating like torch.relu / relu6.
  if (act == static_cast<int>(Act::kRelu)) return v < A(0) ? A(0) : v;
  if (act == static_cast<int>(Act::kRelu6)) return v < A(0) ? A(0) : (v > A(6) ? A(6) : v);
  return v;
}

__device__ __forceinline__ float sigmoid_f(float v) { return 1.f / (1.f + __expf(-v)); }
__device__ __forceinline__ double sigmoid_f(double v) { return 1.0 / (1.0 + exp(-v)); }

// Two floats -> one 32-bit register of two 16-bit values (lo = first, the lower k index).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

__device__ __forceinline__ uint32_t pack_raw(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

#ifndef AFD_EMU
// ---------------------------------------------------------------------------------------------
// PTX wrappers (sm_80+).
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy global -> shared; zero-fills the destination when !valid.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 16 : 0)
               : "memory");
}
// 4-byte async copy global -> shared; zero-fills the destination when !valid.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 4 : 0)
               : "memory");
}
// 8-byte async copy global -> shared; zero-fills the destination when !valid.
__device__ __forceinline__ void cp_async8(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(valid ? 8 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i; r[i] = matrix i.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem_row)));
}

// D(16x8, f32) += A(16x16, row) * B(16x8, col), 16-bit inputs.
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#define AFD_DYN_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#define AFD_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif  // AFD_EMU

// ---------------------------------------------------------------------------------------------
// FE-Net helpers (fe_conv.cu, repconv_dedrift.cu).

// Async copy of one NHWC piece of n 16-bit elements (n = 8, 4 or 2: 16, 8 or 4 bytes, both
// addresses aligned to that); zero-fills when !valid.
__device__ __forceinline__ void cp_async_piece(void* smem, const void* gmem, bool valid, int n) {
  if (n == 8)
    cp_async16(smem, gmem, valid);
  else if (n == 4)
    cp_async8(smem, gmem, valid);
  else
    cp_async4(smem, gmem, valid);
}

// Copy of one piece of n 16-bit elements (n = 8, 4 or 2), shared -> global (or any aligned pair).
__device__ __forceinline__ void copy_piece(void* dst, const void* src, int n) {
  if (n == 8)
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
  else if (n == 4)
    *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(src);
  else
    *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(src);
}

// One element of a 3x3 conv's input u at channel ci, pixel (h, w) (in range), in the accumulation
// type: u = x, or u = cat(up2(x), skip) (P::skip non-null: x at (h>>1, w>>1) for ci < Cx, skip at
// (h, w) for ci >= Cx). P: RepconvProblem or FeConvProblem.
template <typename T, typename P>
__device__ __forceinline__ typename Num<T>::Acc load_conv_input(const P& p, int b, int ci, int h, int w) {
  if (ci < p.Cx) {
    const int sh = p.skip != nullptr ? 1 : 0;
    return load_acc(static_cast<const T*>(p.x) + b * p.x_st.s[0] + ci * p.x_st.s[1] + (h >> sh) * p.x_st.s[2] +
                    (w >> sh) * p.x_st.s[3]);
  }
  return load_acc(static_cast<const T*>(p.skip) + b * p.skip_st.s[0] + (ci - p.Cx) * p.skip_st.s[1] +
                  h * p.skip_st.s[2] + w * p.skip_st.s[3]);
}

// PReLU as torch computes it: v > 0 ? v : alpha * v (a NaN v stays NaN).
template <typename A>
__device__ __forceinline__ A prelu(A v, A alpha) {
  return v > A(0) ? v : alpha * v;
}

// max that propagates NaN (as torch's max_pool2d): NaN if either is NaN.
template <typename A>
__device__ __forceinline__ A max_nan(A a, A b) {
  return (a > b || a != a) ? a : b;
}

// Opt a kernel in to more than 48 KB of dynamic shared memory (no-op below that).
template <typename K>
inline cudaError_t allow_smem(K kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
#ifdef AFD_EMU
  (void)kernel;
  return cudaSuccess;
#else
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
#endif
}

inline int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

}  // namespace cuda
}  // namespace afd
