//! The process's runtime settings, set once before any work: the allocator,
//! thread counts, and the compute device. Commands and the trainer call these;
//! nothing here parses arguments.

use anyhow::{bail, Result};
use tch::Device;

/// Keep libtorch's freed activation buffers in the heap instead of handing
/// them back to the kernel. glibc's default (mmap above a moving threshold,
/// trim the top at 128 KiB) turns every training step's 1-16 MB tensors into
/// fresh page faults; measured in `docs/performance.md`, this costs about 10%
/// of CNN training speed on 2 cores. The cost is that the process keeps its
/// peak heap until exit, which is what a trainer or a server wants anyway.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any
    // other thread exists, and glibc rejects values it cannot honour.
    unsafe {
        // 32 MiB is the largest threshold glibc accepts on 64-bit; setting it
        // also turns off the dynamic threshold.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Makes the child receive `sig` when this process dies, whatever kills it
/// (SIGKILL included): Linux's parent-death signal, set between fork and
/// exec, and raised at once when the parent is already gone by then. The
/// signal follows the thread that spawns, so spawn from the main thread.
/// Elsewhere than Linux it does nothing.
pub fn die_with_parent(cmd: &mut std::process::Command, sig: i32) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure only calls async-signal-safe functions
        // (prctl, getppid, raise) between fork and exec.
        let parent = unsafe { libc::getpid() };
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::raise(sig);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (cmd, sig);
}

/// A server's allocator: buffers of 128 KiB and more (request bodies,
/// decoded frames) are mapped on their own and unmapped when freed, and
/// the heap's free top is returned, so a burst of large uploads leaves no
/// lasting growth. Also hands back what an earlier stage (the demo's
/// training) kept. Inference allocates little, so this costs nothing
/// measurable there.
pub fn serving_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt and malloc_trim only adjust and trim glibc's heap.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
        libc::malloc_trim(0);
    }
}

/// The thread count given on the command line (`--threads`, `FER_THREADS`).
static CLI_THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Records the command line's thread count, the default of every later
/// [`init_threads`] (a config that says nothing then keeps it), and applies it.
pub fn init_cli_threads(threads: Option<usize>) -> usize {
    if let Some(n) = threads.filter(|&n| n > 0) {
        let _ = CLI_THREADS.set(n);
    }
    init_threads(None)
}

/// Sets the thread counts of rayon and libtorch once, before any work:
/// `threads`, else the command line's, else all cores.
pub fn init_threads(threads: Option<usize>) -> usize {
    let n = threads
        .filter(|&n| n > 0)
        .or_else(|| CLI_THREADS.get().copied())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    tch::set_num_threads(n as i32);
    n
}

/// Picks the device: CUDA, then MPS, then CPU, unless forced.
pub fn pick_device(choice: crate::config::train::DeviceChoice) -> Result<Device> {
    use crate::config::train::DeviceChoice as D;
    Ok(match choice {
        D::Cpu => Device::Cpu,
        D::Cuda => {
            if !tch::Cuda::is_available() {
                bail!("train.device is cuda but no CUDA device is available");
            }
            Device::Cuda(0)
        }
        D::Mps => {
            if !tch::utils::has_mps() {
                bail!("train.device is mps but MPS is not available");
            }
            Device::Mps
        }
        D::Auto => {
            if tch::Cuda::is_available() {
                Device::Cuda(0)
            } else if tch::utils::has_mps() {
                Device::Mps
            } else {
                Device::Cpu
            }
        }
    })
}
