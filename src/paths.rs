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

/// The local MLflow server's database, artifacts, log and pid file.
pub fn mlflow_dir() -> PathBuf {
    runs_root().join("mlflow")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes `bytes` to a temporary file beside `path` and renames it over
/// `path`, so a reader (or a kill) never sees half a file.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
