// The shared math of the C++ and CUDA kernels, in one place for C++:
// JPEG's colour transform, the orthonormal 8x8 DCT-II matrix, the zig-zag order and the activation codes.
// Python twin: python/constants.py (tests/test_constants.py checks they agree).
#pragma once

#if defined(__CUDACC__)
#define AFD_HD __host__ __device__
#define AFD_CONST __device__ __constant__
#else
#define AFD_HD
#define AFD_CONST
#endif

namespace afd {

constexpr int kBlock = 8;
constexpr int kCoeff = 64;          // per colour plane
constexpr int kDctChannels = 192;   // Y, Cb, Cr
constexpr float kLevelShift = 128.f;
constexpr double kGateEps = 0.01;  // the gate's floor under each mean |coefficient| (python: GATE_EPS)

// RGB -> YCbCr (JFIF); offsets below are already level-shifted (offset - 128).
// Double like kDct, so float64 kernels match the reference; float kernels cast.
constexpr double kYCbCr[3][3] = {
    {0.299, 0.587, 0.114},
    {-0.168736, -0.331264, 0.5},
    {0.5, -0.418688, -0.081312},
};
constexpr double kYCbCrShiftedOffset[3] = {-128.0, 0.0, 0.0};

// kDct[u][x] = C(u) cos((2x+1) u pi / 16), orthonormal 1-D DCT-II.
constexpr double kDct[8][8] = {
    {0.35355339059327379, 0.35355339059327379, 0.35355339059327379, 0.35355339059327379, 0.35355339059327379, 0.35355339059327379, 0.35355339059327379, 0.35355339059327379},
    {0.49039264020161522, 0.41573480615127262, 0.27778511650980114, 0.097545161008064166, -0.097545161008064096, -0.27778511650980098, -0.41573480615127267, -0.49039264020161522},
    {0.46193976625564337, 0.19134171618254492, -0.19134171618254486, -0.46193976625564337, -0.46193976625564342, -0.19134171618254517, 0.191341716182545, 0.46193976625564326},
    {0.41573480615127262, -0.097545161008064096, -0.49039264020161522, -0.27778511650980109, 0.27778511650980092, 0.49039264020161522, 0.097545161008064388, -0.41573480615127256},
    {0.35355339059327379, -0.35355339059327373, -0.35355339059327384, 0.35355339059327368, 0.35355339059327384, -0.35355339059327334, -0.35355339059327356, 0.35355339059327329},
    {0.27778511650980114, -0.49039264020161522, 0.097545161008064152, 0.41573480615127273, -0.41573480615127256, -0.097545161008064013, 0.49039264020161533, -0.27778511650980076},
    {0.19134171618254492, -0.46193976625564342, 0.46193976625564326, -0.19134171618254495, -0.19134171618254528, 0.46193976625564337, -0.4619397662556432, 0.19134171618254478},
    {0.097545161008064166, -0.27778511650980109, 0.41573480615127273, -0.49039264020161533, 0.49039264020161522, -0.41573480615127251, 0.27778511650980076, -0.097545161008064291},
};

// kZigzag[k] = row * 8 + col of zig-zag index k.
constexpr int kZigzag[64] = {0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63};

// Activation codes of every kernel (the Triton kernel's ACT too): python/constants.py ACT_CODES.
enum class Act : int { kRelu = 0, kRelu6 = 1, kIdentity = 2 };

}  // namespace afd
