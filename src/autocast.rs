//! Mixed-precision regions: libtorch's autocast for one device type, bound
//! through the C++ shim in `csrc/autocast.cpp` because tch 0.26 binds only the
//! legacy CUDA switch. Inside a region, convolutions and matrix products run
//! in bfloat16 while weights, gradients, norms and the loss stay in float32.

use crate::config::train::Precision;
use anyhow::{bail, Result};
use tch::Device;

extern "C" {
    fn fer_autocast_set(device_type: i32, enabled: i32, dtype: i32) -> i32;
    fn fer_autocast_increment_nesting() -> i32;
    fn fer_autocast_exit();
}

/// c10::ScalarType::BFloat16.
const BFLOAT16: i32 = 15;

fn device_type(device: Device) -> Result<i32> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => bail!("bf16 autocast is supported on cpu and cuda, not {other:?}"),
    }
}

/// Autocast to bfloat16 on `device` while the guard lives.
pub struct Bf16 {
    device_type: i32,
    previous: i32,
}

impl Bf16 {
    pub fn enter(device: Device) -> Result<Bf16> {
        let dt = device_type(device)?;
        // SAFETY: the shim takes and returns plain ints and catches C++ errors.
        let previous = unsafe { fer_autocast_set(dt, 1, BFLOAT16) };
        if previous < 0 {
            bail!("libtorch refused bf16 autocast on {device:?}");
        }
        unsafe { fer_autocast_increment_nesting() };
        Ok(Bf16 {
            device_type: dt,
            previous,
        })
    }
}

impl Drop for Bf16 {
    fn drop(&mut self) {
        // SAFETY: as in `enter`; restores the state found there.
        unsafe {
            fer_autocast_exit();
            fer_autocast_set(self.device_type, self.previous, BFLOAT16);
        }
    }
}

/// The mode `precision` means on `device`: fp32 and bf16 mean themselves;
/// `auto`, as measured (docs/performance.md), bf16 on a CUDA device and on
/// CPUs with AVX-512 BF16 but no AMX (about 2x the fp32 rate on the AMD
/// EPYC kind), fp32 on CPUs without native bfloat16, where oneDNN emulates
/// it (about 12x slower on a 2-core AVX2 EPYC), and on AMX CPUs, where bf16
/// trained the zoo CNN at 191 against 255 img/s in fp32. The CPU is read
/// once per process.
pub fn resolve(precision: Precision, device: Device) -> Precision {
    static CPU_PICKS_BF16: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if precision != Precision::Auto {
        return precision;
    }
    if device != Device::Cpu {
        return Precision::Bf16;
    }
    let bf16 = *CPU_PICKS_BF16.get_or_init(|| {
        use crate::cpu::flags;
        flags(&["avx512_bf16"]) && !flags(&["amx_bf16"])
    });
    if bf16 {
        Precision::Bf16
    } else {
        Precision::Fp32
    }
}

/// Whether this CPU has native bfloat16 arithmetic (AVX-512 BF16 or AMX),
/// where bf16 autocast pays; elsewhere oneDNN emulates it and it is slower.
pub fn cpu_has_bf16() -> bool {
    use crate::cpu::flags;
    flags(&["avx512_bf16"]) || flags(&["amx_bf16"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn region_runs_matmuls_in_bf16_and_restores_fp32() {
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        {
            let _g = Bf16::enter(Device::Cpu).unwrap();
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            {
                let _inner = Bf16::enter(Device::Cpu).unwrap();
                assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            }
            // Leaving an inner region keeps the outer one on.
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
        }
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
    }
}
