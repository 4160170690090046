// libtorch's per-device autocast switches, which tch 0.26 does not bind (its
// `tch::autocast` toggles only the legacy CUDA flag). Only plain C types cross
// the boundary, so the C++ ABI of the wheel does not matter here, and no C++
// exception may unwind into Rust.
#include <ATen/autocast_mode.h>

extern "C" {

// `device_type` follows c10::DeviceType (0 = CPU, 1 = CUDA) and `dtype`
// c10::ScalarType (15 = BFloat16). Returns the previous state (0 or 1), or -1
// when libtorch refused.
int fer_autocast_set(int device_type, int enabled, int dtype) {
  try {
    auto dev = static_cast<c10::DeviceType>(device_type);
    int prev = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(dev, enabled != 0);
    return prev;
  } catch (...) {
    return -1;
  }
}

int fer_autocast_increment_nesting() { return at::autocast::increment_nesting(); }

// Leaving the outermost autocast region drops its cache of casted weights.
void fer_autocast_exit() {
  if (at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
  }
}
}
