//! Bad input found while loading: what it was, where, and the policy that
//! decides whether it is skipped with a warning or fails the load.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What to do with a bad file or row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadInputPolicy {
    /// Warn, count it in the summary, and leave the item out.
    #[default]
    Skip,
    /// Finish scanning, then fail with every problem listed.
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// The image bytes do not decode (corrupt or truncated).
    CorruptImage,
    /// Decoded, but not 48x48.
    WrongSize,
    /// Decoded, but has colour channels.
    NotGrayscale,
    /// A folder that is not one of the seven class names.
    UnknownFolder,
    /// A stray file where a class folder was expected, or a non-image file.
    UnexpectedFile,
    /// A class folder with no images, or no folder at all for a class.
    EmptyClass,
    /// A CSV row that does not parse.
    MalformedRow,
}

impl IssueKind {
    pub fn describe(self) -> &'static str {
        match self {
            IssueKind::CorruptImage => "corrupt or truncated image",
            IssueKind::WrongSize => "image is not 48x48",
            IssueKind::NotGrayscale => "image is not grayscale",
            IssueKind::UnknownFolder => "unknown class folder",
            IssueKind::UnexpectedFile => "unexpected file",
            IssueKind::EmptyClass => "class has no images",
            IssueKind::MalformedRow => "malformed CSV row",
        }
    }

    /// Found by decoding a file's bytes (so known while the file is
    /// unchanged); the others come from listing folders or reading the CSV.
    pub fn found_by_decoding(self) -> bool {
        matches!(
            self,
            IssueKind::CorruptImage | IssueKind::WrongSize | IssueKind::NotGrayscale
        )
    }

    /// Issues that lose data; the others (an empty class, a stray file) are
    /// warnings under either policy.
    pub fn loses_data(self) -> bool {
        !matches!(self, IssueKind::EmptyClass | IssueKind::UnexpectedFile)
    }
}

/// One problem, with the file (and CSV line) it was found in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    pub kind: IssueKind,
    /// Path relative to the data set root, with `:LINE` for CSV rows.
    pub location: String,
    pub detail: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.location,
            self.kind.describe(),
            self.detail
        )
    }
}

/// Everything found while loading, in a stable order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    pub issues: Vec<Issue>,
}

impl LoadReport {
    pub fn push(
        &mut self,
        kind: IssueKind,
        location: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.issues.push(Issue {
            kind,
            location: location.into(),
            detail: detail.into(),
        });
    }

    pub fn count(&self, kind: IssueKind) -> usize {
        self.issues.iter().filter(|i| i.kind == kind).count()
    }

    /// Counts per kind, for summaries.
    pub fn counts(&self) -> Vec<(IssueKind, usize)> {
        let mut kinds: Vec<IssueKind> = self.issues.iter().map(|i| i.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds.into_iter().map(|k| (k, self.count(k))).collect()
    }

    pub fn sort(&mut self) {
        self.issues
            .sort_by(|a, b| a.location.cmp(&b.location).then(a.kind.cmp(&b.kind)));
    }

    /// Applies the policy: under `Error`, any issue that loses data fails the
    /// load with a message listing the problems (the first 20 in full).
    pub fn check(&self, policy: BadInputPolicy) -> Result<(), BadInputError> {
        let bad: Vec<&Issue> = self.issues.iter().filter(|i| i.kind.loses_data()).collect();
        if policy == BadInputPolicy::Error && !bad.is_empty() {
            let mut msg = String::new();
            for issue in bad.iter().take(20) {
                msg.push_str(&format!("\n  {issue}"));
            }
            if bad.len() > 20 {
                msg.push_str(&format!("\n  ... and {} more", bad.len() - 20));
            }
            return Err(BadInputError {
                count: bad.len(),
                listing: msg,
            });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{count} bad input item(s) with `on_bad_input: error`:{listing}\n(set `on_bad_input: skip` to leave them out with a warning)")]
pub struct BadInputError {
    pub count: usize,
    listing: String,
}
