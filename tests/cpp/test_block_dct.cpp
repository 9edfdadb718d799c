// CTest check of the C++ library without Python: the ops are reached through the dispatcher,
// block_dct is compared with a naive per-pixel DCT written independently here, and
// repconv_dedrift with its at::conv2d composition.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

at::Tensor block_dct(const at::Tensor& img) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("afd::block_dct", "").typed<at::Tensor(const at::Tensor&)>();
  return op.call(img);
}

at::Tensor repconv_dedrift(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                           const at::Tensor& fdm, const at::Tensor& feat, c10::string_view act) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("afd::repconv_dedrift", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&,
                                         const at::Tensor&, const at::Tensor&, c10::string_view,
                                         const c10::optional<at::Tensor>&)>();
  return op.call(x, weight, bias, fdm, feat, act, /*skip=*/c10::nullopt);
}

// JPEG zig-zag order: walk the anti-diagonals, alternating direction.
std::vector<std::pair<int, int>> zigzag() {
  std::vector<std::pair<int, int>> order;
  for (int s = 0; s < 15; ++s) {
    for (int k = 0; k < 8; ++k) {
      const int r = s % 2 == 0 ? s - k : k;  // even diagonals run upwards (row decreasing)
      if (r >= 0 && r < 8 && s - r >= 0 && s - r < 8) order.emplace_back(r, s - r);
    }
  }
  return order;
}

// Textbook JPEG forward DCT, one coefficient at a time, in double.
at::Tensor naive_block_dct(const at::Tensor& img) {
  const at::Tensor x = img.to(at::kDouble).contiguous();
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  at::Tensor out = at::zeros({B, 192, H / 8, W / 8}, x.options());
  auto in = x.accessor<double, 4>();
  auto o = out.accessor<double, 4>();
  const auto order = zigzag();
  const double pi = std::acos(-1.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < H / 8; ++i)
      for (int64_t j = 0; j < W / 8; ++j)
        for (int k = 0; k < 64; ++k) {
          const auto [u, v] = order[k];
          double sum[3] = {0, 0, 0};
          for (int y = 0; y < 8; ++y)
            for (int xx = 0; xx < 8; ++xx) {
              const double r = in[b][0][i * 8 + y][j * 8 + xx], g = in[b][1][i * 8 + y][j * 8 + xx],
                           bl = in[b][2][i * 8 + y][j * 8 + xx];
              const double ycc[3] = {0.299 * r + 0.587 * g + 0.114 * bl - 128,
                                     -0.168736 * r - 0.331264 * g + 0.5 * bl,
                                     0.5 * r - 0.418688 * g - 0.081312 * bl};
              const double basis = std::cos((2 * y + 1) * u * pi / 16) * std::cos((2 * xx + 1) * v * pi / 16);
              for (int c = 0; c < 3; ++c) sum[c] += ycc[c] * basis;
            }
          const double cu = u == 0 ? std::sqrt(0.5) : 1.0, cv = v == 0 ? std::sqrt(0.5) : 1.0;
          for (int c = 0; c < 3; ++c) o[b][c * 64 + k][i][j] = 0.25 * cu * cv * sum[c];
        }
  return out;
}

void test_block_dct() {
  at::manual_seed(0);
  const at::Tensor img = at::rand({2, 3, 16, 24}, at::kDouble) * 255;
  const at::Tensor expected = naive_block_dct(img);
  const at::Tensor got = block_dct(img);
  expect(got.sizes() == expected.sizes(), "block_dct shape (2, 192, 2, 3)");
  expect(at::allclose(got, expected, 1e-10, 1e-9), "block_dct float64 matches the naive DCT");
  expect(at::allclose(block_dct(img.to(at::kFloat)).to(at::kDouble), expected, 1e-5, 1e-3),
         "block_dct float32 matches the naive DCT");
  const at::Tensor cl = block_dct(img.contiguous(at::MemoryFormat::ChannelsLast));
  expect(cl.is_contiguous(at::MemoryFormat::ChannelsLast) && at::allclose(cl, expected, 1e-10, 1e-9),
         "block_dct channels_last input gives a channels_last output with the same values");
  expect(block_dct(at::rand({0, 3, 8, 8})).sizes() == at::IntArrayRef({0, 192, 1, 1}), "block_dct batch 0");

  bool threw = false;
  try {
    block_dct(at::rand({1, 3, 12, 16}));
  } catch (const c10::ValueError& e) {
    threw = std::string(e.what_without_backtrace()).find("multiples of 8") != std::string::npos;
  }
  expect(threw, "block_dct rejects H % 8 != 0 with a ValueError");
}

void test_repconv_dedrift() {
  at::manual_seed(1);
  const at::Tensor x = at::randn({2, 4, 16, 12}, at::kDouble), weight = at::randn({6, 4, 3, 3}, at::kDouble),
                   bias = at::randn({6}, at::kDouble), fdm = at::rand({2, 6, 8, 3}, at::kDouble),
                   feat = at::randn({2, 6, 16, 12}, at::kDouble);
  const at::Tensor up = fdm.repeat_interleave(2, 2).repeat_interleave(4, 3);
  const at::Tensor expected = at::relu(feat + at::conv2d(x, weight, bias, {1, 1}, {1, 1}) * up);
  expect(at::allclose(repconv_dedrift(x, weight, bias, fdm, feat, "relu"), expected, 1e-10, 1e-10),
         "repconv_dedrift matches relu(feat + conv2d(x) * nearest_up(fdm))");
}

}  // namespace

int main() {
  test_block_dct();
  test_repconv_dedrift();
  if (failures) std::printf("%d check(s) failed\n", failures);
  return failures == 0 ? 0 : 1;
}
