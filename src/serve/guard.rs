//! Panic containment and the model's health. A panic inside one request is
//! caught and answered as that request's failure; the model is then asked
//! again for its answers on a fixed probe batch. If those are no longer what
//! it gave at start-up (a panic, NaN, other values), the model is broken:
//! `/healthz` fails and requests are refused until the server is restarted.

use super::fault::Fault;
use super::{lock, Engine, FrameResult, Rejected, Stream};
use crate::artifact::Classifier;
use crate::data::{ImageSet, Origin, PIXELS, SIDE};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// How far a probe answer may move between two checks and still be the
/// same model (forward passes on the CPU repeat to far better than this).
const SAME: f32 = 1e-3;

/// Why a frame got no result.
#[derive(Debug)]
pub(super) enum Failure {
    /// The payload was refused (4xx).
    Rejected(Rejected),
    /// The work panicked; the message, for the log and the client (500).
    Panicked(String),
    /// The model failed its health check earlier (503).
    Broken(String),
    /// No turn to decode and classify within `--queue-timeout` (503).
    Busy(String),
}

/// The probe batch, the model's answers at start-up, and whether it broke.
pub(super) struct Health {
    probe: ImageSet,
    expected: Vec<f32>,
    broken: Mutex<Option<String>>,
}

/// Two fixed 48x48 inputs: a diagonal gradient and its negative.
fn probe_set() -> ImageSet {
    let mut set = ImageSet::default();
    for flip in [0u8, 255] {
        let px: Vec<u8> = (0..PIXELS)
            .map(|i| (((i % SIDE) * 5 + (i / SIDE) * 3) as u8) ^ flip)
            .collect();
        set.push(&px, 0, Origin::Unknown, String::new());
    }
    set
}

/// The model's probabilities on `set`, or why they are unusable: a panic,
/// the wrong count, a non-finite value, or a row that does not sum to 1.
fn answers(clf: &Classifier, set: &ImageSet) -> Result<Vec<f32>, String> {
    let p = catch_unwind(AssertUnwindSafe(|| clf.predict_set_raw(set, false, 64)))
        .map_err(|e| format!("its forward pass panicked: {}", panic_message(&*e)))?
        .map_err(|e| format!("{e:#}"))?;
    let k = clf.meta.classes.len();
    if p.len() != set.len() * k {
        return Err(format!(
            "it gave {} probabilities for {} images of {k} classes",
            p.len(),
            set.len()
        ));
    }
    if let Some(v) = p.iter().find(|v| !v.is_finite()) {
        return Err(format!("its outputs are non-finite ({v}) on a plain input"));
    }
    for row in p.chunks_exact(k) {
        let sum: f32 = row.iter().sum();
        if (sum - 1.0).abs() > 1e-3 {
            return Err(format!("its probabilities sum to {sum}, not 1"));
        }
    }
    Ok(p)
}

impl Health {
    /// Start-up: the model must answer the probe batch sensibly.
    pub(super) fn check(clf: &Classifier) -> Result<Health, String> {
        let probe = probe_set();
        let expected = answers(clf, &probe)?;
        Ok(Health {
            probe,
            expected,
            broken: Mutex::new(None),
        })
    }

    /// Why the model is broken, if it is.
    pub(super) fn broken(&self) -> Option<String> {
        lock(&self.broken).clone()
    }

    /// After a panic: the model is broken unless it still gives its
    /// start-up answers on the probe batch.
    fn recheck(&self, clf: &Classifier) {
        let verdict = answers(clf, &self.probe).and_then(|p| {
            let drift = p
                .iter()
                .zip(&self.expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            if drift > SAME {
                Err(format!(
                    "its answers on the probe batch moved by {drift} since start-up"
                ))
            } else {
                Ok(())
            }
        });
        if let Err(why) = verdict {
            eprintln!("fer serve: the model is broken after a panic: {why}; restart fer serve");
            *lock(&self.broken) = Some(why);
        }
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
pub(super) fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| e.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

impl Engine {
    /// [`Engine::process`] with any panic inside contained: the panic is this
    /// frame's failure, counted, and the model is checked before the next.
    pub(super) fn handle(
        &self,
        bytes: &[u8],
        stream: Option<&mut Stream>,
        fault: Fault,
    ) -> Result<FrameResult, Failure> {
        if let Some(why) = self.health.broken() {
            self.metrics.error("model_broken");
            return Err(Failure::Broken(why));
        }
        let fault = if self.faults { fault } else { Fault::None };
        match catch_unwind(AssertUnwindSafe(|| self.frame(bytes, stream, fault))) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(r)) => {
                self.metrics.error(match r {
                    Rejected::BadPayload(_) => "bad_payload",
                    Rejected::TooManyPixels(_) => "too_many_pixels",
                });
                Err(Failure::Rejected(r))
            }
            Err(e) => {
                self.metrics.error("panic");
                self.health.recheck(&lock(&self.clf));
                Err(Failure::Panicked(panic_message(&*e)))
            }
        }
    }

    /// Why the model is broken, if a check after a panic found it so.
    pub fn broken(&self) -> Option<String> {
        self.health.broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_images_differ_and_fill_a_face() {
        let s = probe_set();
        assert_eq!(s.len(), 2);
        let (a, b) = s.pixels.split_at(PIXELS);
        assert!(a.iter().zip(b).all(|(x, y)| x ^ y == 255));
        assert!(a.iter().collect::<std::collections::BTreeSet<_>>().len() > 100);
    }

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        let e = catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*e), "plain");
        let n = 3;
        let e = catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(&*e), "formatted 3");
    }
}
