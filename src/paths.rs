//! The on-disk layout of `runs/`: the only module that knows it.

use std::path::PathBuf;

/// Root of all outputs: `$FER_RUNS_DIR`, else `runs` in the working folder.
pub fn runs_root() -> PathBuf {
    std::env::var_os("FER_RUNS_DIR").map_or_else(|| PathBuf::from("runs"), PathBuf::from)
}

/// Decoded-data cache.
pub fn cache_dir() -> PathBuf {
    runs_root().join("cache")
}

/// Outputs of `fer data ...`.
pub fn data_dir() -> PathBuf {
    runs_root().join("data")
}

/// Outputs of `fer bench ...`.
pub fn bench_dir() -> PathBuf {
    runs_root().join("bench")
}
