//! Test-only fault injection, so the integration tests can check panic
//! containment on a real server: no well-formed input makes the pipeline
//! panic, and a model file that would is refused at load. Unreachable in
//! normal use: it acts only when the server was started with
//! `FER_TEST_FAULTS=1` in its environment (a client cannot set that), and
//! the server says so on stderr at start-up. Then an HTTP request with the
//! header `x-fer-fault: panic` panics inside the classifier's lock, and
//! `x-fer-fault: corrupt` first overwrites the network's weights with NaN
//! (a model broken in memory), then panics.

use crate::artifact::Classifier;

/// The environment variable that enables the faults.
const ENV: &str = "FER_TEST_FAULTS";
/// The request header that asks for one.
pub const HEADER: &str = "x-fer-fault";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    Panic,
    Corrupt,
}

/// Whether this process accepts faults; read once, when the engine starts.
pub fn enabled() -> bool {
    let on = std::env::var(ENV).is_ok_and(|v| v == "1");
    if on {
        eprintln!("fer serve: {ENV}=1: test fault injection is ON (header {HEADER}); never run a real server so");
    }
    on
}

impl Fault {
    /// The fault a request asks for (`None` for anything unknown).
    pub fn from_header(value: Option<&str>) -> Fault {
        match value {
            Some("panic") => Fault::Panic,
            Some("corrupt") => Fault::Corrupt,
            _ => Fault::None,
        }
    }

    /// Acts out the fault with the classifier's lock held.
    pub fn fire(self, clf: &Classifier) {
        match self {
            Fault::None => {}
            Fault::Panic => panic!("injected fault ({HEADER}: panic)"),
            Fault::Corrupt => {
                if let Some(vs) = &clf.vs {
                    tch::no_grad(|| {
                        for (_, mut t) in vs.variables() {
                            let _ = t.fill_(f64::NAN);
                        }
                    });
                }
                panic!("injected fault ({HEADER}: corrupt)");
            }
        }
    }
}
