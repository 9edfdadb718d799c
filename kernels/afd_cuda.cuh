// Host-side interface of the afd CUDA kernels (kernels/*.cu). Plain CUDA: no torch headers,
// so the .cu files compile quickly; the ATen launchers live in csrc/cuda/*_cuda.cpp.
//
// Every launch function takes raw device pointers, sizes, element strides, a dtype tag and a
// stream, and returns the first CUDA error it met (cudaSuccess when the launch was issued;
// launch-time errors are picked up by C10_CUDA_KERNEL_LAUNCH_CHECK in the caller).
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace afd {
namespace cuda {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// Element strides of a 4-D tensor (dims 0..3).
struct Strides4 {
  int64_t s[4];
};

// Device facts the launchers pass in (from at::cuda::getCurrentDeviceProperties()).
struct DeviceInfo {
  int num_sms;
  size_t max_smem_optin;  // cudaDevAttrMaxSharedMemoryPerBlockOptin
};

// ---------------------------------------------------------------------------------------------
// afd::block_dct: img (B,3,H,W) -> out (B,192,H/8,W/8); any strides for both.
cudaError_t launch_block_dct(const void* img, Strides4 img_st, void* out, Strides4 out_st, int B, int H, int W,
                             DType dt, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// afd::block_dct_fdm.
// dt is the weights' (and the output's) dtype; the image has dtype dt too, or is uint8 (0..255).
// (a) Generic path (all dtypes, any strides, any h1/h2/C whose tile fits in shared memory):
//     block DCT into shared memory, then the three dense layers as SIMT GEMMs.
//     Weights must be contiguous (nn.Linear layout). img_uint8 != 0: a uint8 image, its pixels
//     converted to the accumulation type as they are loaded.
size_t fdm_generic_smem_bytes(int h1, int h2, DType dt);
cudaError_t launch_block_dct_fdm_generic(const void* img, int img_uint8, Strides4 img_st, const void* w1,
                                         const void* b1, const void* w2, const void* b2, const void* w3,
                                         const void* b3, void* out, Strides4 out_st, int B, int H, int W, int h1,
                                         int h2, int C, DType dt, const DeviceInfo& dev, cudaStream_t stream);

// (b) Tensor-core path (float16 / bfloat16 image of the weights' dtype; the launcher widens a uint8
//     image to that dtype before it): the colour transform and the DCT are linear, so they are folded into the first layer
//     (w1f = w1 . K, K the 192x192 pixel->coefficient matrix; see
//     kernels/README.md). Image must be dense NCHW (nhwc == 0) or dense NHWC (nhwc == 1) with a
//     16-byte aligned data pointer. Workspace: w1f (h1p x 192 float16, for both input dtypes: the
//     tensor-core math is float16) and b1f (h1p floats), h1p = round_up(h1, 16), written by
//     launch_fdm_fold_w1 on the same stream.
int fdm_pad16(int n);
bool fdm_mma_supported(int h1, int h2, int C, DType dt, const DeviceInfo& dev);
size_t fdm_mma_smem_bytes(int h1, int h2, int C);
cudaError_t launch_fdm_fold_w1(const void* w1, const void* b1, int h1, int nhwc, void* w1f, float* b1f, DType dt,
                               cudaStream_t stream);
cudaError_t launch_block_dct_fdm_mma(const void* img, int nhwc, const void* w1f, const float* b1f, const void* w2,
                                     const void* b2, const void* w3, const void* b3, void* out, Strides4 out_st,
                                     int B, int H, int W, int h1, int h2, int C, DType dt, const DeviceInfo& dev,
                                     cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// afd::repconv_dedrift: out = act(feat + (conv3x3(x, weight, pad 1) + bias) * nearest_up(fdm)).
// act: 0 relu, 1 relu6, 2 identity (afd::Act). bias may be null. weight contiguous (C,Cin,3,3).
// The conv's input u is x (skip == nullptr, Cx == Cin) or cat(up2(x), skip) (the FE-Net decoder's:
// x (B,Cx,ceil(Hf/2),ceil(Wf/2)) read at (h>>1, w>>1) for channels ci < Cx, skip (B,Cin-Cx,Hf,Wf)
// at (h, w) for ci >= Cx); neither the upsampled x nor the concatenation goes to memory.
struct RepconvProblem {
  const void* x;
  Strides4 x_st;
  const void* skip;  // nullable
  Strides4 skip_st;
  int Cx;            // channels read from x (Cin without a skip)
  const void* weight;
  const void* bias;  // nullable
  const void* fdm;
  Strides4 fdm_st;
  const void* feat;
  Strides4 feat_st;
  void* out;
  Strides4 out_st;
  int B, Cin, C, Hf, Wf, Hb, Wb;
  int act;
};

// (a) Generic path: any dtype, any strides, any sizes (SIMT direct convolution, fp32/fp64 accumulation).
cudaError_t launch_repconv_dedrift_generic(const RepconvProblem& p, DType dt, cudaStream_t stream);

// (b) Tensor-core path (float16 / bfloat16, C <= 64): x, skip, feat and out all dense NHWC (nhwc == 1:
//     channels even; x/skip copied in pieces of nhwc_vec(Cx, Cs) channels, feat/out in pieces of
//     nhwc_vec(C, C), the pointers aligned to 2 x that many bytes) or all dense NCHW (nhwc == 0, needs
//     Wf even, 4-byte aligned pointers); fdm any strides.
bool repconv_mma_supported(const RepconvProblem& p, int nhwc, DType dt, const DeviceInfo& dev);
cudaError_t launch_repconv_dedrift_mma(const RepconvProblem& p, int nhwc, DType dt, const DeviceInfo& dev,
                                       cudaStream_t stream);

// Channels per NHWC copy piece of the tensor-core kernels (16-bit types): 8 (16 bytes), 4 or 2 when
// they divide both a and b (b = 0: a alone), 0 when none does (odd channel counts: no tensor-core path).
int nhwc_vec(int a, int b);

// ---------------------------------------------------------------------------------------------
// afd::fe_conv: out = maxpool2x2_ceil?(prelu(conv3x3(u, weight, pad 1) + bias, alpha)), one FE-Net
// block; u = x or cat(up2(x), skip) as for repconv_dedrift above. weight contiguous (C,Cin,3,3),
// bias (nullable) and alpha contiguous (C). H, W: the conv's resolution (skip's, or x's without
// one); out (B,C,H,W), or (B,C,ceil(H/2),ceil(W/2)) when pool != 0. No PReLU'd, pre-pool,
// upsampled or concatenated tensor goes to memory.
struct FeConvProblem {
  const void* x;
  Strides4 x_st;
  const void* skip;  // nullable
  Strides4 skip_st;
  int Cx;            // channels read from x (Cin without a skip)
  const void* weight;
  const void* bias;  // nullable
  const void* alpha;
  void* out;
  Strides4 out_st;
  int B, Cin, C, H, W;
  int pool;
};

// (a) Generic path: any dtype, any strides, any sizes (SIMT direct convolution, fp32/fp64 accumulation).
cudaError_t launch_fe_conv_generic(const FeConvProblem& p, DType dt, cudaStream_t stream);

// (b) Tensor-core path (float16 / bfloat16, C <= 64 and Cin whose weights fit in shared memory):
//     x, skip and out dense NHWC, channel counts even (pieces of nhwc_vec(Cx, Cs) and nhwc_vec(C, 0)
//     channels, pointers aligned to 2 x that many bytes).
bool fe_conv_mma_supported(const FeConvProblem& p, DType dt, const DeviceInfo& dev);
cudaError_t launch_fe_conv_mma(const FeConvProblem& p, DType dt, const DeviceInfo& dev, cudaStream_t stream);

}  // namespace cuda
}  // namespace afd
