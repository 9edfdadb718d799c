// CPU stand-in for the CUDA features the afd kernels use, force-included (-include) when
// kernels/emu/check.py compiles kernels/*.cu as plain C++. Not part of the extension build.
// Each CTA runs as blockDim OS threads (CTAs one after another, so `static` stands in for
// __shared__), std::barrier for __syncthreads, per-warp barriers for ldmatrix / mma.sync (fragment
// layouts as in the PTX ISA), cp.async as a synchronous copy with zero fill.
#pragma once
#define AFD_EMU 1
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <barrier>
#include <thread>
#include <vector>
#include <tuple>
#include <memory>
#include <cstring>
#include <cmath>
#include <cstdint>
#include <algorithm>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __constant__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __constant__
#define __shared__ static
#define __launch_bounds__(...)

namespace afd_emu {
struct Warp {
  std::barrier<> bar{32};
  const uint16_t* ptrs[32];
  uint64_t shfl[32];
  uint32_t a[32][4];
  uint32_t b[32][2];
};
struct Cta {
  explicit Cta(int n) : bar(n), nwarps((n + 31) / 32) { warps.reserve(nwarps); for (int i = 0; i < nwarps; ++i) warps.emplace_back(new Warp()); }
  std::barrier<> bar;
  int nwarps;
  std::vector<std::unique_ptr<Warp>> warps;
};
struct Tls { uint3 tid; uint3 bid; Cta* cta; };
inline thread_local Tls tls;
inline dim3 g_grid, g_block;
inline std::vector<unsigned char> g_dyn;
inline size_t g_last_dyn_smem = 0;  // dynamic shared memory of the last launch (0: a generic kernel)
inline unsigned char* dyn_smem() { return reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(g_dyn.data()) + 15) & ~uintptr_t(15)); }
inline int lane() { return tls.tid.x & 31; }
inline Warp& warp() { return *tls.cta->warps[tls.tid.x >> 5]; }

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, Args&&... args) {
  std::tuple<std::decay_t<KArgs>...> targs(std::forward<Args>(args)...);
  const int n = block.x * block.y * block.z;
  g_grid = grid; g_block = block;
  g_last_dyn_smem = smem;
  g_dyn.assign(smem + 64, 0xCD);  // poison
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Cta cta(n);
        std::vector<std::thread> ts;
        ts.reserve(n);
        for (int t = 0; t < n; ++t)
          ts.emplace_back([&, t] {
            tls.tid = make_uint3(t, 0, 0);
            tls.bid = make_uint3(bx, by, bz);
            tls.cta = &cta;
            std::apply(kernel, targs);
            cta.warps[t >> 5]->bar.arrive_and_drop();
            cta.bar.arrive_and_drop();
          });
        for (auto& th : ts) th.join();
      }
}

inline float h2f(uint16_t bits, bool bf16) {
  if (bf16) { uint32_t u = uint32_t(bits) << 16; float f; std::memcpy(&f, &u, 4); return f; }
  __half_raw r; r.x = bits; return __half2float(__half(r));
}
}  // namespace afd_emu

// __shfl_xor_sync over the whole warp (every lane must call it, as the kernels do).
template <typename V>
inline V __shfl_xor_sync(unsigned, V v, int lane_mask, int = 32) {
  static_assert(sizeof(V) <= 8, "shfl of up to 8 bytes");
  auto& w = afd_emu::warp(); const int l = afd_emu::lane();
  uint64_t bits = 0; std::memcpy(&bits, &v, sizeof(V));
  w.shfl[l] = bits;
  w.bar.arrive_and_wait();
  bits = w.shfl[l ^ lane_mask];
  w.bar.arrive_and_wait();
  V r; std::memcpy(&r, &bits, sizeof(V));
  return r;
}
#define threadIdx (afd_emu::tls.tid)
#define blockIdx (afd_emu::tls.bid)
#define blockDim (afd_emu::g_block)
#define gridDim (afd_emu::g_grid)
#define __syncthreads() (afd_emu::tls.cta->bar.arrive_and_wait())
#define __expf(x) std::exp(x)
#define AFD_DYN_SMEM(name) unsigned char* name = afd_emu::dyn_smem()
#define AFD_LAUNCH(kernel, grid, block, smem, stream, ...) afd_emu::launch(kernel, grid, block, smem, __VA_ARGS__)
using std::min;
using std::max;

namespace afd { namespace cuda {
inline void cp_async16(void* s, const void* g, bool valid) { if (valid) std::memcpy(s, g, 16); else std::memset(s, 0, 16); }
inline void cp_async4(void* s, const void* g, bool valid) {
  if (reinterpret_cast<uintptr_t>(s) % 4 || (valid && reinterpret_cast<uintptr_t>(g) % 4)) { fprintf(stderr, "cp_async4 misaligned\n"); abort(); }
  if (valid) std::memcpy(s, g, 4); else std::memset(s, 0, 4); }
inline void cp_async8(void* s, const void* g, bool valid) {
  if (reinterpret_cast<uintptr_t>(s) % 8 || (valid && reinterpret_cast<uintptr_t>(g) % 8)) { fprintf(stderr, "cp_async8 misaligned\n"); abort(); }
  if (valid) std::memcpy(s, g, 8); else std::memset(s, 0, 8); }
inline void cp_async_commit() {}
template <int N> inline void cp_async_wait() {}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  if (reinterpret_cast<uintptr_t>(p) % 16) { fprintf(stderr, "ldmatrix misaligned\n"); abort(); }
  auto& w = afd_emu::warp(); const int l = afd_emu::lane();
  w.ptrs[l] = static_cast<const uint16_t*>(p);
  w.bar.arrive_and_wait();
  for (int i = 0; i < 4; ++i) {
    const uint16_t* row = w.ptrs[i * 8 + l / 4];
    r[i] = uint32_t(row[2 * (l % 4)]) | (uint32_t(row[2 * (l % 4) + 1]) << 16);
  }
  w.bar.arrive_and_wait();
}
template <typename T>
inline void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  constexpr bool bf = std::is_same_v<T, __nv_bfloat16>;
  auto& w = afd_emu::warp(); const int l = afd_emu::lane();
  for (int i = 0; i < 4; ++i) w.a[l][i] = a[i];
  w.b[l][0] = b0; w.b[l][1] = b1;
  w.bar.arrive_and_wait();
  float A[16][16], B[16][8];
  for (int ln = 0; ln < 32; ++ln) {
    const int g = ln / 4, t = ln % 4;
    auto lo = [&](uint32_t v) { return afd_emu::h2f(uint16_t(v & 0xffff), bf); };
    auto hi = [&](uint32_t v) { return afd_emu::h2f(uint16_t(v >> 16), bf); };
    A[g][2 * t] = lo(w.a[ln][0]); A[g][2 * t + 1] = hi(w.a[ln][0]);
    A[g + 8][2 * t] = lo(w.a[ln][1]); A[g + 8][2 * t + 1] = hi(w.a[ln][1]);
    A[g][2 * t + 8] = lo(w.a[ln][2]); A[g][2 * t + 9] = hi(w.a[ln][2]);
    A[g + 8][2 * t + 8] = lo(w.a[ln][3]); A[g + 8][2 * t + 9] = hi(w.a[ln][3]);
    B[2 * t][g] = lo(w.b[ln][0]); B[2 * t + 1][g] = hi(w.b[ln][0]);
    B[2 * t + 8][g] = lo(w.b[ln][1]); B[2 * t + 9][g] = hi(w.b[ln][1]);
  }
  const int g = l / 4, t = l % 4;
  const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
  for (int i = 0; i < 4; ++i) { float s = 0; for (int k = 0; k < 16; ++k) s += A[rows[i]][k] * B[k][cols[i]]; d[i] += s; }
  w.bar.arrive_and_wait();
}
}}  // namespace afd::cuda
