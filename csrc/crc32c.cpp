// CRC-32C (Castagnoli), as TensorFlow's tensor bundles record one per tensor: table-driven,
// eight bytes a step (slicing-by-8; portable C++, about 1 GB/s), the GIL released.
#include "registry.h"

#include <array>
#include <cstdint>
#include <cstring>

namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // reflected 0x1EDC6F41

struct Tables {
  std::array<std::array<uint32_t, 256>, 8> t{};
  Tables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPolynomial : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  }
};

const Tables& tables() {
  static const Tables all;
  return all;
}

uint32_t extend(uint32_t crc, const uint8_t* p, size_t n) {
  const auto& t = tables().t;
  crc = ~crc;
  while (n >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= crc;  // little-endian hosts (x86-64, aarch64)
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^ t[3][hi & 0xFF] ^
          t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) crc = t[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

// Python: crc32c(data: bytes-like, value: int = 0) -> int, continuing from ``value`` (the CRC of what came before).
uint32_t crc32c(pybind11::buffer data, uint32_t value) {
  const pybind11::buffer_info b = data.request();
  const auto* p = static_cast<const uint8_t*>(b.ptr);
  const size_t n = static_cast<size_t>(b.size) * static_cast<size_t>(b.itemsize);
  pybind11::gil_scoped_release release;
  return extend(value, p, n);
}

void bind_crc32c(pybind11::module& m) {
  m.def("crc32c", &crc32c, "CRC-32C of a bytes-like object, continuing from value", pybind11::arg("data"), pybind11::arg("value") = 0);
}

const cpixelcnn::Registration registered(bind_crc32c);

}  // namespace
