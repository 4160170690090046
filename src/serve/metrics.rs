//! Prometheus text exposition, by hand: a few counters and histograms do
//! not need a registry crate.

use super::lock;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }
    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let lb = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{lb} {}", self.sum);
        let _ = writeln!(out, "{name}_count{lb} {}", self.count);
    }
}

pub const STAGES: [&str; 4] = ["decode", "detect", "classify", "total"];

pub struct Metrics {
    inner: Mutex<Inner>,
}

struct Inner {
    requests: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    stages: Vec<Histogram>,
    faces: Histogram,
    classes: Vec<u64>,
    /// The most frames ever decoded and classified at once.
    in_progress_max: usize,
}

/// Point-in-time values the server knows, rendered beside the counters.
pub struct Gauges {
    /// Frames being decoded and classified now.
    pub in_progress: usize,
    /// `--max-concurrent`.
    pub limit: usize,
    pub model_broken: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        let secs = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
        Metrics {
            inner: Mutex::new(Inner {
                requests: BTreeMap::new(),
                errors: BTreeMap::new(),
                stages: STAGES.iter().map(|_| Histogram::new(&secs)).collect(),
                faces: Histogram::new(&[0.0, 1.0, 2.0, 3.0, 5.0, 10.0]),
                classes: Vec::new(),
                in_progress_max: 0,
            }),
        }
    }
}

impl Metrics {
    pub fn request(&self, endpoint: &str) {
        *lock(&self.inner)
            .requests
            .entry(endpoint.into())
            .or_default() += 1;
    }
    pub fn error(&self, kind: &str) {
        *lock(&self.inner).errors.entry(kind.into()).or_default() += 1;
    }
    /// A frame started; `now` are in progress, itself included.
    pub fn in_progress(&self, now: usize) {
        let mut m = lock(&self.inner);
        m.in_progress_max = m.in_progress_max.max(now);
    }
    /// One processed frame: stage times in seconds, and the predicted classes.
    pub fn frame(&self, stage_secs: [f64; 4], predicted: &[usize]) {
        let mut m = lock(&self.inner);
        for (h, s) in m.stages.iter_mut().zip(stage_secs) {
            h.observe(s);
        }
        m.faces.observe(predicted.len() as f64);
        for &c in predicted {
            // As many counters as the model has classes, grown on first use.
            if m.classes.len() <= c {
                m.classes.resize(c + 1, 0);
            }
            m.classes[c] += 1;
        }
    }

    pub fn render(&self, classes: &[String], drift: &super::drift::Summary, g: &Gauges) -> String {
        let m = lock(&self.inner);
        let mut s = String::new();
        s += "# HELP fer_requests_total Requests by endpoint.\n# TYPE fer_requests_total counter\n";
        for (k, v) in &m.requests {
            let _ = writeln!(s, "fer_requests_total{{endpoint=\"{k}\"}} {v}");
        }
        s += "# HELP fer_errors_total Rejected requests by reason.\n# TYPE fer_errors_total counter\n";
        for (k, v) in &m.errors {
            let _ = writeln!(s, "fer_errors_total{{reason=\"{k}\"}} {v}");
        }
        s += "# HELP fer_stage_seconds Per-frame latency by stage.\n# TYPE fer_stage_seconds histogram\n";
        for (h, st) in m.stages.iter().zip(STAGES) {
            h.render(&mut s, "fer_stage_seconds", &format!("stage=\"{st}\""));
        }
        s += "# HELP fer_faces_per_frame Faces found per frame.\n# TYPE fer_faces_per_frame histogram\n";
        m.faces.render(&mut s, "fer_faces_per_frame", "");
        s += "# HELP fer_predictions_total Faces by predicted class.\n# TYPE fer_predictions_total counter\n";
        for (i, c) in classes.iter().enumerate() {
            let v = m.classes.get(i).copied().unwrap_or(0);
            let _ = writeln!(s, "fer_predictions_total{{class=\"{c}\"}} {v}");
        }
        s += "# HELP fer_drift_class_share Class shares: live (rolling window) and training.\n# TYPE fer_drift_class_share gauge\n";
        for (i, c) in classes.iter().enumerate() {
            let _ = writeln!(
                s,
                "fer_drift_class_share{{class=\"{c}\",source=\"live\"}} {}",
                drift.live.get(i).copied().unwrap_or(0.0)
            );
            let _ = writeln!(
                s,
                "fer_drift_class_share{{class=\"{c}\",source=\"train\"}} {}",
                drift.train.get(i).copied().unwrap_or(0.0)
            );
        }
        s += "# HELP fer_drift_mean_confidence Mean top probability over the rolling window.\n# TYPE fer_drift_mean_confidence gauge\n";
        let _ = writeln!(s, "fer_drift_mean_confidence {}", drift.mean_confidence);
        if let Some(t) = drift.train_mean_confidence {
            s += "# HELP fer_drift_reference_confidence Mean top probability on the validation split at training time.\n# TYPE fer_drift_reference_confidence gauge\n";
            let _ = writeln!(s, "fer_drift_reference_confidence {t}");
        }
        s += "# HELP fer_drift_divergence Total variation distance between live and training class shares.\n# TYPE fer_drift_divergence gauge\n";
        let _ = writeln!(s, "fer_drift_divergence {}", drift.divergence);
        s += "# HELP fer_frames_in_progress Frames being decoded and classified.\n# TYPE fer_frames_in_progress gauge\n";
        let _ = writeln!(s, "fer_frames_in_progress {}", g.in_progress);
        s += "# HELP fer_frames_in_progress_max The most frames in progress at once since start-up.\n# TYPE fer_frames_in_progress_max gauge\n";
        let _ = writeln!(s, "fer_frames_in_progress_max {}", m.in_progress_max);
        s += "# HELP fer_frames_in_progress_limit At most this many at once (--max-concurrent).\n# TYPE fer_frames_in_progress_limit gauge\n";
        let _ = writeln!(s, "fer_frames_in_progress_limit {}", g.limit);
        s += "# HELP fer_model_broken 1 once the model failed its check after a panic (then /healthz fails).\n# TYPE fer_model_broken gauge\n";
        let _ = writeln!(s, "fer_model_broken {}", u8::from(g.model_broken));
        s
    }
}
