//! Where a run came from: code version, machine, user, command and data.
//! Written into every run folder so a later `fer mlflow sync` tags the run
//! with the facts of the run, not of the machine doing the upload.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FILE: &str = crate::layout::PROVENANCE;

/// The commit `fer` was built from (`+dirty` with local changes), or
/// "unknown" when built outside a git checkout.
pub const GIT_COMMIT: &str = env!("FER_GIT_COMMIT");

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Provenance {
    pub fer_version: String,
    pub git_commit: String,
    pub host: String,
    /// CPU model and logical cores, for reading timings.
    pub cpu: String,
    pub cores: usize,
    pub user: String,
    pub command: String,
    /// Unix time (s).
    pub started: f64,
    pub device: Option<String>,
    pub threads: Option<usize>,
    pub data_digest: Option<String>,
    pub data_dir: Option<String>,
    /// Images in the train, validation and test splits.
    pub split_sizes: Option<[usize; 3]>,
    /// The resolved config when the run or sweep started (or was last
    /// resumed with accepted changes): what `--resume` is checked against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// The model file whose weights the run started from (`train.init`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<InitRecord>,
    /// Each resume that changed the recipe, with the changes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resumes: Vec<Resumed>,
}

/// The model file a fine-tuned run started from, pinned by its bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InitRecord {
    pub path: String,
    pub blake3: String,
    /// The file's own name (`fer.meta.name`).
    pub name: String,
    /// Its training split held images of this run's validation split, so
    /// the run's validation figures are optimistic.
    pub sees_val: bool,
}

/// A resume that changed keys a resume may change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resumed {
    /// Unix time (s).
    pub time: f64,
    pub host: String,
    pub command: String,
    pub changes: Vec<crate::config::diff::Change>,
}

impl Resumed {
    pub fn now(changes: Vec<crate::config::diff::Change>) -> Resumed {
        Resumed {
            time: crate::layout::unix_now(),
            host: hostname(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            changes,
        }
    }
}

impl Provenance {
    /// The facts of this process, now.
    pub fn here() -> Provenance {
        Provenance {
            fer_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: GIT_COMMIT.into(),
            host: hostname(),
            cpu: crate::cpu::model(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            user: user(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            started: crate::layout::unix_now(),
            ..Default::default()
        }
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::layout::write_atomic(&dir.join(FILE), &serde_json::to_vec_pretty(self)?)
    }

    /// The record in `dir`, if there is a readable one.
    pub fn load(dir: &Path) -> Option<Provenance> {
        let text = std::fs::read_to_string(dir.join(FILE)).ok()?;
        serde_json::from_str(&text)
            .with_context(|| format!("reading {}", dir.join(FILE).display()))
            .map_err(|e| tracing::warn!("{e:#}"))
            .ok()
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

pub fn user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}
