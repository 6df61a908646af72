// PNG scanline reconstruction (the five filter types of PNG's filter method 0) for 8-bit
// non-interlaced greyscale or RGB images, written straight into a planar (C, H, W) uint8 array.
// Decoding a small PNG is mostly inflate plus this; PIL's row-by-row decoder and the copy out of
// its RGBX image took as long as inflate itself. The Python side (cpixelcnn/data/images.py)
// inflates with zlib and falls back to PIL for anything this does not accept.
#include <torch/extension.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "registry.h"

namespace {

// Average and Paeth depend on the pixel to the left, so a row is one chain of dependent steps: one
// pixel per step with its channels in vector lanes (GCC/Clang vector extensions) is 1.5x faster
// than three interleaved scalar chains, and branch-free selection 2x faster than Paeth's branches.
#if defined(__GNUC__)
typedef int16_t Lanes __attribute__((vector_size(16)));

// Comparisons give -1/0 lanes; selecting with masks (not ?:) is what GCC and Clang both accept.
inline Lanes lanes_select(Lanes mask, Lanes yes, Lanes no) { return (yes & mask) | (no & ~mask); }
inline Lanes lanes_abs(Lanes x) {
  const Lanes negative = x < 0;
  return (x ^ negative) - negative;
}

template <int BPP, bool PAETH>  // PAETH false: the Average filter
void average_or_paeth(const uint8_t* line, const uint8_t* prior, uint8_t* row, int64_t stride) {
  Lanes left = {0}, upper_left = {0};
  for (int64_t i = 0; i < stride; i += BPP) {
    Lanes up = {0}, filtered = {0};
    for (int k = 0; k < BPP; ++k) {
      up[k] = prior[i + k];
      filtered[k] = line[i + k];
    }
    Lanes predicted;
    if (PAETH) {
      const Lanes pa = lanes_abs(up - upper_left), pb = lanes_abs(left - upper_left), pc = lanes_abs(left + up - upper_left - upper_left);
      const Lanes b_wins = pb <= pc;
      predicted = lanes_select(pa <= lanes_select(b_wins, pb, pc), left, lanes_select(b_wins, up, upper_left));
    } else {
      predicted = (left + up) >> 1;
    }
    const Lanes value = (filtered + predicted) & 0xff;
    for (int k = 0; k < BPP; ++k) row[i + k] = static_cast<uint8_t>(value[k]);
    left = value;
    upper_left = up;
  }
}
#else
template <int BPP, bool PAETH>
void average_or_paeth(const uint8_t* line, const uint8_t* prior, uint8_t* row, int64_t stride) {
  for (int64_t i = 0; i < stride; ++i) {
    const int a = i >= BPP ? row[i - BPP] : 0, b = prior[i], c = i >= BPP ? prior[i - BPP] : 0;
    int predicted = (a + b) >> 1;
    if (PAETH) {
      const int pa = std::abs(b - c), pb = std::abs(a - c), pc = std::abs(a + b - 2 * c);
      predicted = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
    }
    row[i] = static_cast<uint8_t>(line[i] + predicted);
  }
}
#endif

// raw: height rows of (1 filter byte + width * channels bytes); out: (channels, height, width).
// False (out then holds garbage) for a filter type outside 0..4.
template <int BPP>
bool unfilter(const uint8_t* raw, uint8_t* out, int64_t height, int64_t width) {
  constexpr int64_t channels = BPP, bpp = BPP;
  const int64_t stride = width * channels, plane = height * width;
  std::vector<uint8_t> rows(2 * stride, 0);  // the previous and the current reconstructed row, interleaved
  uint8_t* prior = rows.data();
  uint8_t* row = rows.data() + stride;
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t filter = raw[0];
    const uint8_t* line = raw + 1;
    raw += 1 + stride;
    switch (filter) {
      case 0:
        for (int64_t i = 0; i < stride; ++i) row[i] = line[i];
        break;
      case 1:
        for (int64_t i = 0; i < bpp; ++i) row[i] = line[i];
        for (int64_t i = bpp; i < stride; ++i) row[i] = static_cast<uint8_t>(line[i] + row[i - bpp]);
        break;
      case 2:
        for (int64_t i = 0; i < stride; ++i) row[i] = static_cast<uint8_t>(line[i] + prior[i]);
        break;
      case 3:
        average_or_paeth<BPP, false>(line, prior, row, stride);
        break;
      case 4:
        average_or_paeth<BPP, true>(line, prior, row, stride);
        break;
      default:
        return false;
    }
    for (int64_t c = 0; c < channels; ++c) {
      uint8_t* dst = out + c * plane + y * width;
      for (int64_t x = 0; x < width; ++x) dst[x] = row[x * channels + c];
    }
    std::swap(prior, row);
  }
  return true;
}

// Python: png_unfilter(raw: bytes-like, out: writable uint8 (C, H, W) C-contiguous buffer, size, channels) -> bool.
// False for anything unexpected (lengths, a filter type): the caller then decodes the file another way.
bool png_unfilter(pybind11::buffer raw, pybind11::buffer out, int64_t size, int64_t channels) {
  const pybind11::buffer_info r = raw.request(), o = out.request(true);
  if (size <= 0 || (channels != 1 && channels != 3) || r.itemsize != 1 || o.itemsize != 1) return false;
  if (r.size != size * (1 + size * channels) || o.size != channels * size * size) return false;
  // out must be C-contiguous: strides of 1 byte per element in the last dimension, growing outward
  int64_t expected = 1;
  for (int64_t d = o.ndim - 1; d >= 0; --d) {
    if (o.shape[d] != 1 && o.strides[d] != expected) return false;
    expected *= o.shape[d];
  }
  const auto* src = static_cast<const uint8_t*>(r.ptr);
  auto* dst = static_cast<uint8_t*>(o.ptr);
  pybind11::gil_scoped_release release;
  return channels == 3 ? unfilter<3>(src, dst, size, size) : unfilter<1>(src, dst, size, size);
}

void bind_png_unfilter(pybind11::module& m) {
  m.def("png_unfilter", &png_unfilter,
        "PNG filter-method-0 reconstruction of an inflated 8-bit greyscale/RGB image: raw (size*(1+size*C)) bytes "
        "-> out (C, size, size) uint8; False if the data is not such an image",
        pybind11::arg("raw"), pybind11::arg("out"), pybind11::arg("size"), pybind11::arg("channels"));
}

const cpixelcnn::Registration registered(bind_png_unfilter);

}  // namespace
