//! The seam between the code that writes run folders (trainer, sweep) and
//! whatever tracks them: told which folder changed, closed at the end with a
//! one-line account. `crate::mlflow` implements it; nothing here knows MLflow.

use std::path::Path;

/// The seam between training and tracking: told which folder changed,
/// and closed at the end with a one-line account.
pub trait Tracker {
    /// `dir` (a run or a sweep folder) has new files. Never blocks.
    fn changed(&self, dir: &Path);
    /// Waits (boundedly) for the uploads and says how it went.
    fn finish(self: Box<Self>) -> TrackReport;
}

#[derive(Clone, Debug, Default)]
pub struct TrackReport {
    /// Where the runs went, for the person at the terminal.
    pub message: Option<String>,
    /// Everything reached the server.
    pub complete: bool,
}

/// Local store only: the trainer has already written everything.
pub struct LocalOnly;

impl Tracker for LocalOnly {
    fn changed(&self, _: &Path) {}
    fn finish(self: Box<Self>) -> TrackReport {
        TrackReport {
            message: None,
            complete: true,
        }
    }
}
