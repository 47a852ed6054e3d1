//! Where and in which number format the CNN runs: the device (`--device`), the
//! precision (`--precision`), and the CPU's denormal handling.

use super::ModelError;
use tch::Device;

/// The `--device` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// CUDA when libtorch sees a GPU, else the CPU
    Auto,
    /// The CPU
    Cpu,
    /// The first CUDA GPU
    Cuda,
}

impl DeviceChoice {
    /// The libtorch device, refusing `cuda` when no GPU is visible.
    pub fn resolve(self) -> Result<Device, ModelError> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => Ok(Device::cuda_if_available()),
            DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceChoice::Cuda => Err(ModelError::Device {
                name: "cuda",
                reason: "no CUDA GPU is visible to libtorch (use --device cpu or auto)",
            }),
        }
    }
}

/// The `--precision` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionChoice {
    /// bf16 convolutions on a CPU with AVX512-BF16, else f32
    Auto,
    /// f32 everywhere
    F32,
    /// bf16 convolutions (CPUs with AVX512-BF16 only)
    Bf16,
}

impl PrecisionChoice {
    /// The precision on `device`. `auto` is [`Precision::auto`]; `bf16` is refused
    /// where it would be slow or untested (CUDA, CPUs without AVX512-BF16).
    pub fn resolve(self, device: Device) -> Result<Precision, ModelError> {
        let refuse = |reason| Err(ModelError::Precision { name: "bf16", reason });
        match self {
            PrecisionChoice::Auto => Ok(Precision::auto(device)),
            PrecisionChoice::F32 => Ok(Precision::F32),
            PrecisionChoice::Bf16 if device != Device::Cpu => {
                refuse("bf16 is for CPU inference; use f32 or auto on cuda")
            }
            PrecisionChoice::Bf16 if !cpu_has_native_bf16() => {
                refuse("this CPU has no native bf16 arithmetic (AVX512-BF16); use f32 or auto")
            }
            PrecisionChoice::Bf16 => Ok(Precision::Bf16),
        }
    }
}

/// The number format of an inference network's convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// bfloat16 weights and activations (f32 accumulation) for the convolutions
    /// where oneDNN's bf16 kernels beat f32 (`net::runs_in_bf16`); the rest, the
    /// heatmap softmax and the moments stay f32.
    Bf16,
}

impl Precision {
    /// bf16 on a CPU that multiplies bf16 natively (AVX512-BF16, as on AMD Zen 4
    /// and Intel Sapphire Rapids), where it takes about 30% off the 68-point
    /// network's time with the same NME to 4 decimals (docs/MODEL.md); f32
    /// elsewhere and on CUDA.
    pub fn auto(device: Device) -> Precision {
        if device == Device::Cpu && cpu_has_native_bf16() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Whether the CPU has AVX512-BF16 (bf16 dot products). Without it oneDNN
/// emulates bf16 or libtorch falls back to slow kernels.
pub(crate) fn cpu_has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// A device as `run` and `eval` report it, with the CPU's thread count.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} CNN threads)", tch::get_num_threads()),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

/// Treats denormal floats as zero in this thread's SSE arithmetic and in every
/// thread it starts afterwards (a new thread inherits the creator's MXCSR), as
/// PyTorch's `set_flush_denormal(True)` does. Call it first thing in `main`, before
/// libtorch starts its thread pool. Denormals (below 1.2e-38) arise in the
/// convolutions' small products and take a slow microcode path on x86; flushing
/// them took the 68-point network with random weights from 7.6 to 5.9 ms at
/// batch 1. No-op on other architectures.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads and writes this thread's MXCSR register only; setting FTZ (bit
    // 15) and DAZ (bit 6) changes the results of denormal operands and results
    // to zero, nothing else.
    unsafe {
        let mut csr: u32 = 0;
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr as *mut u32, options(nostack));
        csr |= 0x8040;
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr as *const u32, options(nostack, readonly));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `auto` follows the CPU; bf16 is refused where it would be slow or untested
    /// (CUDA, CPUs without AVX512-BF16). Unknown names are refused by the CLI
    /// parser (`tests/bad_input.rs`).
    #[test]
    fn precision_choices_resolve_or_are_refused() {
        assert_eq!(PrecisionChoice::Auto.resolve(Device::Cpu).unwrap(), Precision::auto(Device::Cpu));
        assert_eq!(PrecisionChoice::F32.resolve(Device::Cpu).unwrap(), Precision::F32);
        assert_eq!(PrecisionChoice::Auto.resolve(Device::Cuda(0)).unwrap(), Precision::F32);
        let err = PrecisionChoice::Bf16.resolve(Device::Cuda(0)).unwrap_err().to_string();
        assert!(err.contains("for CPU inference"), "{err}");
        match PrecisionChoice::Bf16.resolve(Device::Cpu) {
            Ok(p) => assert!(p == Precision::Bf16 && cpu_has_native_bf16()),
            Err(e) => assert!(!cpu_has_native_bf16() && e.to_string().contains("AVX512-BF16"), "{e}"),
        }
    }
}
