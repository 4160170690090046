//! What a folder's `mlflow.json` remembers of each server: the run and model
//! ids, and what of the folder each server already holds. Planning reads it;
//! the network half of the sync updates it after each step that succeeds.

use super::SyncError;
use crate::layout;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What one server holds of one run folder.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerState {
    pub experiment_id: Option<String>,
    pub run_id: Option<String>,
    pub artifact_uri: Option<String>,
    /// Params already logged (key → value).
    pub params: BTreeMap<String, String>,
    /// Tags already set (key → value); tags overwrite, so only changes go.
    pub tags: BTreeMap<String, String>,
    pub inputs_done: bool,
    /// Ledgers before points were recorded by key and step counted them;
    /// such a count is replaced by asking the server (`reconcile_points`).
    #[serde(skip_serializing_if = "is_zero")]
    pub metrics_sent: usize,
    /// The (key, step) of every point the server accepted.
    pub points: std::collections::BTreeSet<(String, i64)>,
    /// The run existed on the server before this ledger knew it (found by
    /// its uid, or by name and start time): its points are to be learnt.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub found: bool,
    /// Uploaded artifacts: relative path → (size, mtime ns, blake3).
    pub artifacts: BTreeMap<String, (u64, u128, String)>,
    pub status: Option<String>,
    pub model_id: Option<String>,
    pub model_artifact_uri: Option<String>,
    pub model_ready: bool,
    pub registered: Option<(String, String)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Client-generated id, fixed before the first create.
    pub uid: String,
    pub servers: BTreeMap<String, ServerState>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl State {
    /// The folder's ledger. A damaged one is kept aside as
    /// `mlflow.json.damaged` with a warning and rebuilt: the uid comes from
    /// the folder itself, so each server's run is found again, not doubled.
    fn load(dir: &Path) -> State {
        let path = dir.join(layout::MLFLOW_STATE);
        let mut s: State = match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(s) => s,
                Err(e) => {
                    let aside = dir.join(format!("{}.damaged", layout::MLFLOW_STATE));
                    let _ = std::fs::rename(&path, &aside);
                    tracing::warn!(
                        "{}: damaged ({e}); kept as {} and rebuilt from the servers",
                        path.display(),
                        aside.display()
                    );
                    State::default()
                }
            },
            Err(_) => State::default(),
        };
        if s.uid.is_empty() {
            s.uid = folder_uid(dir);
        }
        s
    }
    fn save(&self, dir: &Path) -> Result<(), SyncError> {
        let bytes = serde_json::to_vec_pretty(self).expect("state serialises");
        layout::write_atomic(&dir.join(layout::MLFLOW_STATE), &bytes)
            .map_err(|e| SyncError::Local(format!("{e:#}")))
    }
}

/// What `dir`'s `mlflow.json` records of the server at `uri` (read only).
pub fn server_state(dir: &Path, uri: &str) -> Option<ServerState> {
    let bytes = std::fs::read(dir.join(layout::MLFLOW_STATE)).ok()?;
    let state: State = serde_json::from_slice(&bytes).ok()?;
    state.servers.get(uri).cloned()
}

/// The folder's own id: a digest of where and when it was started (its
/// `provenance.json`) and its name, the same every time it is computed;
/// random for a folder without provenance.
fn folder_uid(dir: &Path) -> String {
    match crate::provenance::Provenance::load(dir).filter(|p| p.started > 0.0) {
        Some(p) => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let key = format!("{}\n{}\n{}\n{name}", p.host, p.started, p.command);
            blake3::hash(key.as_bytes()).to_hex()[..32].to_string()
        }
        None => new_uid(),
    }
}

fn new_uid() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..16)
        .map(|_| format!("{:02x}", r.random::<u8>()))
        .collect()
}

/// One folder's state during a sync, with a working copy of the entry of
/// the server being synced (`s`), written back by `commit`.
pub(super) struct Ledger {
    dir: PathBuf,
    uri: String,
    pub state: State,
    pub s: ServerState,
}

impl Ledger {
    /// The folder's state (a fresh uid when it has none yet) and `uri`'s
    /// entry (empty when that server has nothing of it).
    pub fn load(dir: &Path, uri: &str) -> Ledger {
        let state = State::load(dir);
        let s = state.servers.get(uri).cloned().unwrap_or_default();
        Ledger {
            dir: dir.to_path_buf(),
            uri: uri.to_string(),
            state,
            s,
        }
    }

    /// Writes the state as loaded (the working entry left out), so that the
    /// uid is on disk before a create can happen.
    pub fn save_uid(&self) -> Result<(), SyncError> {
        self.state.save(&self.dir)
    }

    /// Puts the working entry into the state and writes it.
    pub fn commit(&mut self) -> Result<(), SyncError> {
        self.state.servers.insert(self.uri.clone(), self.s.clone());
        self.state.save(&self.dir)
    }
}
