//! A blocking MLflow REST client: authentication, retries, timeouts, batch
//! limits and the server's value-type quirks (see
//! `../shared/docs/mlflow/README.md`). Every request is bounded: a server
//! that fails fast (refused, reset, 5xx) is retried with backoff, one that
//! does not answer costs one timeout and is not asked again.

use serde::Serialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The server's per-request limits for `runs/log-batch`.
pub const MAX_METRICS: usize = 1000;
pub const MAX_PARAMS: usize = 100;
pub const MAX_TAGS: usize = 100;
pub const MAX_ENTRIES: usize = 1000;
/// Longer param values are silently truncated by the server; we truncate
/// ourselves so what is stored locally and remotely agree.
pub const MAX_PARAM_VALUE: usize = 6000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer at all: refused or reset after every retry, or silent
    /// until the timeout (then `attempts` is 1).
    #[error("MLflow at {uri} is unreachable ({what}){}", if *attempts > 1 { format!(" after {attempts} attempts") } else { String::new() })]
    Unreachable {
        uri: String,
        what: String,
        attempts: u32,
    },
    /// The deadline set with [`Client::set_deadline`] has passed.
    #[error("MLflow at {uri}: {endpoint} not sent, the time allowed for tracking is over")]
    OutOfTime { uri: String, endpoint: String },
    /// An HTTP error answer. `code` is MLflow's `error_code` when the body
    /// was JSON.
    #[error("MLflow at {uri} answered {status} to {endpoint}: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Http {
        uri: String,
        endpoint: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error("MLflow at {uri}: unexpected answer to {endpoint}: {message}")]
    Protocol {
        uri: String,
        endpoint: String,
        message: String,
    },
}

impl Error {
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Http { code, .. } => code.as_deref(),
            _ => None,
        }
    }
    /// Worth trying again later (the server may come back); an error answer
    /// about the request itself or the credentials is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::OutOfTime { .. } => true,
            Error::Http { status, .. } => retryable_status(*status),
            Error::Protocol { .. } => false,
        }
    }
    /// A hint for the person at the terminal.
    pub fn hint(&self) -> &'static str {
        match self.status() {
            Some(401) => " (check MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN)",
            Some(403) => " (the credentials lack permission, or the server rejects this Host)",
            Some(404) if self.code().is_none() => {
                " (no MLflow REST API at this address: check the tracking URI)"
            }
            _ => "",
        }
    }
}

fn retryable_status(s: u16) -> bool {
    matches!(s, 408 | 429 | 500 | 502 | 503 | 504)
}

#[derive(Clone, Debug)]
pub enum Auth {
    Basic { user: String, password: String },
    Bearer(String),
}

/// The variable that sets [`RetryPolicy::timeout`], named as the official
/// client names it (whose default is 120 s; ours is shorter, see below).
pub const TIMEOUT_VAR: &str = "MLFLOW_HTTP_REQUEST_TIMEOUT";

/// How hard to try before giving up on one request.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts at a request that fails fast (refused, reset, 408/429/5xx).
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a request may wait for its answer. A request that times out
    /// is not retried: a server that stayed silent this long is not expected
    /// to answer the next attempt sooner, and each attempt would cost the
    /// whole timeout again.
    pub timeout: Duration,
    /// Uploads get one more second per this many bytes of body, so a big
    /// model file on a slow but working link is not cut off.
    pub upload_bytes_per_s: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            timeout: Duration::from_secs(15),
            upload_bytes_per_s: 256 * 1024,
        }
    }
}

impl RetryPolicy {
    /// The default, with the timeout from `MLFLOW_HTTP_REQUEST_TIMEOUT`
    /// (seconds) when set.
    pub fn from_env() -> Result<RetryPolicy, String> {
        let mut p = RetryPolicy::default();
        if let Some(v) = std::env::var(TIMEOUT_VAR)
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            p.timeout = parse_seconds(TIMEOUT_VAR, &v)?;
        }
        Ok(p)
    }

    /// The time one request of `body_bytes` may take.
    pub fn timeout_for(&self, body_bytes: usize) -> Duration {
        let rate = self.upload_bytes_per_s.max(1) as f64;
        self.timeout + Duration::from_secs_f64(body_bytes as f64 / rate)
    }
}

/// Reads a positive number of seconds from the variable `name`.
pub fn parse_seconds(name: &str, value: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{name}='{value}': expected a number of seconds above 0"))
}

/// How long the check that anything answers may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// When the server last answered anything (any HTTP status), readable from
/// another thread while requests run.
#[derive(Clone, Debug, Default)]
pub struct Heard(std::sync::Arc<std::sync::Mutex<Option<Instant>>>);

impl Heard {
    pub fn last(&self) -> Option<Instant> {
        self.0.lock().ok().and_then(|t| *t)
    }
    fn now(&self) {
        if let Ok(mut t) = self.0.lock() {
            *t = Some(Instant::now());
        }
    }
}

#[derive(Clone)]
pub struct Client {
    pub uri: String,
    http: reqwest::blocking::Client,
    auth: Option<Auth>,
    pub retry: RetryPolicy,
    /// No request is started, or waited for, past this instant (the
    /// tracker sets it when the command is done).
    deadline: Option<Instant>,
    heard: Heard,
}

/// A metric point as the server wants it: NaN and infinities as strings
/// (serde_json would write `null`, which the server rejects).
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub key: String,
    pub value: f64,
    pub timestamp_ms: i64,
    pub step: i64,
}

impl Serialize for Point {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.value;
        let value = if v.is_nan() {
            json!("NaN")
        } else if v == f64::INFINITY {
            json!("Infinity")
        } else if v == f64::NEG_INFINITY {
            json!("-Infinity")
        } else {
            json!(v)
        };
        json!({"key": self.key, "value": value, "timestamp": self.timestamp_ms, "step": self.step})
            .serialize(s)
    }
}

/// Reads a metric value that may come back as the string "NaN".
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

/// Whether a key is one the server accepts (alphanumerics, `_-. :/`, at most
/// 250 characters, no path tricks).
pub fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 250
        && !k.starts_with('/')
        && !k.split('/').any(|p| p == "..")
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-. :/".contains(c))
}

/// Splits metrics, params and tags into requests within the batch limits.
pub fn batches(
    metrics: &[Point],
    params: &[(String, String)],
    tags: &[(String, String)],
) -> Vec<Value> {
    let mut out = Vec::new();
    let (mut m, mut p, mut t) = (0, 0, 0);
    while m < metrics.len() || p < params.len() || t < tags.len() {
        let np = (params.len() - p).min(MAX_PARAMS);
        let nt = (tags.len() - t).min(MAX_TAGS);
        let nm = (metrics.len() - m)
            .min(MAX_METRICS)
            .min(MAX_ENTRIES - np - nt);
        let kv = |v: &[(String, String)]| {
            v.iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect::<Vec<_>>()
        };
        out.push(json!({
            "metrics": metrics[m..m + nm],
            "params": kv(&params[p..p + np]),
            "tags": kv(&tags[t..t + nt]),
        }));
        m += nm;
        p += np;
        t += nt;
    }
    out
}

impl Client {
    /// A client for `uri`, with credentials from the environment as the
    /// official client reads them (Basic wins over Bearer).
    pub fn new(uri: &str) -> Result<Client, Error> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let auth = match (
            env("MLFLOW_TRACKING_USERNAME"),
            env("MLFLOW_TRACKING_PASSWORD"),
        ) {
            (Some(user), Some(password)) => Some(Auth::Basic { user, password }),
            _ => env("MLFLOW_TRACKING_TOKEN").map(Auth::Bearer),
        };
        let retry = RetryPolicy::from_env().map_err(|message| Error::Protocol {
            uri: uri.trim_end_matches('/').to_string(),
            endpoint: "-".into(),
            message,
        })?;
        Client::with_policy(uri, auth, retry)
    }

    pub fn with_auth(uri: &str, auth: Option<Auth>) -> Result<Client, Error> {
        Client::with_policy(uri, auth, RetryPolicy::default())
    }

    pub fn with_policy(uri: &str, auth: Option<Auth>, retry: RetryPolicy) -> Result<Client, Error> {
        let uri = uri.trim_end_matches('/').to_string();
        let bad = |m: &str| Error::Protocol {
            uri: uri.clone(),
            endpoint: "-".into(),
            message: m.into(),
        };
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(bad(
                "the tracking URI must start with http:// or https:// (file stores are not supported)",
            ));
        }
        // Each request sets its own timeout (`timeout_for`); a connection
        // that is not even accepted in 5 s is as silent as an unanswered one.
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(retry.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("fer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&format!("building the HTTP client: {e}")))?;
        Ok(Client {
            uri,
            http,
            auth,
            retry,
            deadline: None,
            heard: Heard::default(),
        })
    }

    /// When the server last answered, shared with this client's clones.
    pub fn heard(&self) -> Heard {
        self.heard.clone()
    }

    /// From now on no request starts, and none waits, past `deadline`.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// `want`, cut to what is left before the deadline (`None`: none left).
    fn within_deadline(&self, want: Duration) -> Option<Duration> {
        match self.deadline {
            None => Some(want),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                (!left.is_zero()).then(|| want.min(left))
            }
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        endpoint: &str,
        body: Option<Body>,
    ) -> Result<reqwest::blocking::Response, Error> {
        let mut backoff = self.retry.first_backoff;
        let mut last = String::new();
        let want = self
            .retry
            .timeout_for(body.as_ref().map_or(0, Body::upload_len));
        let out_of_time = || Error::OutOfTime {
            uri: self.uri.clone(),
            endpoint: endpoint.to_string(),
        };
        for attempt in 1..=self.retry.attempts.max(1) {
            let Some(timeout) = self.within_deadline(want) else {
                return Err(out_of_time());
            };
            let mut rq = self.http.request(method.clone(), url).timeout(timeout);
            rq = match &self.auth {
                Some(Auth::Basic { user, password }) => rq.basic_auth(user, Some(password)),
                Some(Auth::Bearer(t)) => rq.bearer_auth(t),
                None => rq,
            };
            rq = match &body {
                Some(Body::Json(v)) => rq.json(v),
                Some(Body::Query(q)) => rq.query(q),
                Some(Body::Bytes(b)) => rq.body(b.clone()),
                None => rq,
            };
            let sent = rq.send();
            if sent.is_ok() {
                self.heard.now();
            }
            match sent {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().unwrap_or_default();
                    let parsed: Option<Value> = serde_json::from_str(&text).ok();
                    let code = parsed
                        .as_ref()
                        .and_then(|v| v["error_code"].as_str())
                        .map(String::from);
                    let message = parsed
                        .as_ref()
                        .and_then(|v| v["message"].as_str())
                        .map(String::from)
                        .unwrap_or_else(|| short(&text));
                    let err = Error::Http {
                        uri: self.uri.clone(),
                        endpoint: endpoint.to_string(),
                        status,
                        code,
                        message,
                    };
                    if !retryable_status(status) || attempt == self.retry.attempts {
                        return Err(err);
                    }
                    last = err.to_string();
                }
                Err(e) if e.is_timeout() => {
                    // Silent: asking again would cost the whole timeout again.
                    return Err(Error::Unreachable {
                        uri: self.uri.clone(),
                        what: format!("no answer to {endpoint} within {}", seconds(timeout)),
                        attempts: attempt,
                    });
                }
                Err(e) => {
                    last = describe(&e);
                    if attempt == self.retry.attempts {
                        break;
                    }
                }
            }
            tracing::debug!("MLflow {endpoint}: {last}; retrying in {backoff:?}");
            let Some(pause) = self.within_deadline(backoff) else {
                return Err(out_of_time());
            };
            std::thread::sleep(pause);
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
        Err(Error::Unreachable {
            uri: self.uri.clone(),
            what: last,
            attempts: self.retry.attempts,
        })
    }

    /// A failure while reading an answer's body: a stall is silence, like a
    /// request timeout; anything else is a protocol error.
    fn body_error(&self, e: &reqwest::Error, endpoint: &str) -> Error {
        if e.is_timeout() {
            Error::Unreachable {
                uri: self.uri.clone(),
                what: format!("the answer to {endpoint} stalled: {}", describe(e)),
                attempts: 1,
            }
        } else {
            Error::Protocol {
                uri: self.uri.clone(),
                endpoint: endpoint.into(),
                message: describe(e),
            }
        }
    }

    fn json_of(&self, r: reqwest::blocking::Response, endpoint: &str) -> Result<Value, Error> {
        let text = r.text().map_err(|e| self.body_error(&e, endpoint))?;
        if text.trim().is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_str(&text).map_err(|e| Error::Protocol {
            uri: self.uri.clone(),
            endpoint: endpoint.into(),
            message: format!("not JSON ({e}): {}", short(&text)),
        })
    }

    /// POST to `/api/2.0/mlflow/<endpoint>`.
    pub fn post(&self, endpoint: &str, body: Value) -> Result<Value, Error> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.uri);
        let r = self.request(
            reqwest::Method::POST,
            &url,
            endpoint,
            Some(Body::Json(body)),
        )?;
        self.json_of(r, endpoint)
    }

    /// PATCH to `/api/2.0/mlflow/<endpoint>`.
    pub fn patch(&self, endpoint: &str, body: Value) -> Result<Value, Error> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.uri);
        let r = self.request(
            reqwest::Method::PATCH,
            &url,
            endpoint,
            Some(Body::Json(body)),
        )?;
        self.json_of(r, endpoint)
    }

    /// GET `/api/2.0/mlflow/<endpoint>?query`.
    pub fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<Value, Error> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.uri);
        let q = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = self.request(reqwest::Method::GET, &url, endpoint, Some(Body::Query(q)))?;
        self.json_of(r, endpoint)
    }

    /// The proxy URL of an `mlflow-artifacts:` URI plus a relative path.
    pub fn artifact_url(&self, artifact_uri: &str, rel: &str) -> Result<String, Error> {
        let root = artifact_uri
            .strip_prefix("mlflow-artifacts:")
            .ok_or_else(|| Error::Protocol {
                uri: self.uri.clone(),
                endpoint: "artifacts".into(),
                message: format!(
                    "artifact location '{artifact_uri}' is not served by the proxy; start the server with --serve-artifacts and no --default-artifact-root"
                ),
            })?
            .trim_start_matches('/');
        Ok(format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{root}/{rel}",
            self.uri
        ))
    }

    pub fn put_artifact(&self, artifact_uri: &str, rel: &str, bytes: Vec<u8>) -> Result<(), Error> {
        let url = self.artifact_url(artifact_uri, rel)?;
        self.request(
            reqwest::Method::PUT,
            &url,
            "artifacts (upload)",
            Some(Body::Bytes(bytes)),
        )?;
        Ok(())
    }

    pub fn get_artifact(&self, artifact_uri: &str, rel: &str) -> Result<Vec<u8>, Error> {
        let url = self.artifact_url(artifact_uri, rel)?;
        let r = self.request(reqwest::Method::GET, &url, "artifacts (download)", None)?;
        r.bytes()
            .map(|b| b.to_vec())
            .map_err(|e| self.body_error(&e, "artifacts (download)"))
    }

    /// Whether anything answers HTTP at the URI within `PROBE_TIMEOUT` (a
    /// `GET /health` with any status): the cheap check, after an outage,
    /// before a sync.
    pub fn answers(&self) -> bool {
        let Some(t) = self.within_deadline(self.retry.timeout.min(PROBE_TIMEOUT)) else {
            return false;
        };
        let ok = self
            .http
            .get(format!("{}/health", self.uri))
            .timeout(t)
            .send()
            .is_ok();
        if ok {
            self.heard.now();
        }
        ok
    }

    /// `GET /health`: true when the server answers "OK".
    pub fn healthy(&self) -> bool {
        self.http
            .get(format!("{}/health", self.uri))
            .timeout(Duration::from_secs(3))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.text().ok())
            .is_some_and(|t| t.trim() == "OK")
    }

    /// Logs metrics, params and tags in as many batches as the limits need.
    /// Safe to repeat: the server stores an identical point once, an
    /// identical param is a no-op and tags overwrite.
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Point],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<(), Error> {
        for mut b in batches(metrics, params, tags) {
            b["run_id"] = json!(run_id);
            self.post("runs/log-batch", b)?;
        }
        Ok(())
    }

    /// The id of the experiment `name`, created (or restored) when needed.
    pub fn experiment(&self, name: &str) -> Result<String, Error> {
        let lookup = || self.get("experiments/get-by-name", &[("experiment_name", name)]);
        let exp = match lookup() {
            Ok(v) => v,
            Err(e) if e.code() == Some("RESOURCE_DOES_NOT_EXIST") => {
                match self.post("experiments/create", json!({"name": name})) {
                    Ok(v) => return self.id_of(&v, "experiment_id", "experiments/create"),
                    Err(e) if e.code() == Some("RESOURCE_ALREADY_EXISTS") => lookup()?,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let id = self.id_of(
            &exp["experiment"],
            "experiment_id",
            "experiments/get-by-name",
        )?;
        if exp["experiment"]["lifecycle_stage"] == "deleted" {
            self.post("experiments/restore", json!({"experiment_id": id}))?;
        }
        Ok(id)
    }

    pub fn id_of(&self, v: &Value, field: &str, endpoint: &str) -> Result<String, Error> {
        v[field]
            .as_str()
            .map(String::from)
            .ok_or_else(|| Error::Protocol {
                uri: self.uri.clone(),
                endpoint: endpoint.into(),
                message: format!("no '{field}' in {}", short(&v.to_string())),
            })
    }

    /// Every run of an experiment matching `filter`, all pages.
    pub fn search_runs(&self, experiment_id: &str, filter: &str) -> Result<Vec<Value>, Error> {
        let mut runs = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({"experiment_ids": [experiment_id], "filter": filter,
                "max_results": 1000, "run_view_type": "ACTIVE_ONLY"});
            if let Some(t) = &token {
                body["page_token"] = json!(t);
            }
            let v = self.post("runs/search", body)?;
            if let Some(rs) = v["runs"].as_array() {
                runs.extend(rs.iter().cloned());
            }
            token = v["next_page_token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(String::from);
            if token.is_none() {
                return Ok(runs);
            }
        }
    }

    /// Every point of one metric's history.
    pub fn history(&self, run_id: &str, key: &str) -> Result<Vec<Point>, Error> {
        let v = self.get(
            "metrics/get-history",
            &[("run_id", run_id), ("metric_key", key)],
        )?;
        Ok(v["metrics"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| Point {
                        key: m["key"].as_str().unwrap_or_default().to_string(),
                        value: number(&m["value"]).unwrap_or(f64::NAN),
                        timestamp_ms: m["timestamp"].as_i64().unwrap_or(0),
                        step: m["step"].as_i64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

enum Body {
    Json(Value),
    Query(Vec<(String, String)>),
    Bytes(Vec<u8>),
}

impl Body {
    /// The bytes an upload sends (JSON bodies are small).
    fn upload_len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            _ => 0,
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    // The source chain says why (refused, DNS, ...).
    let mut s = format!("{kind}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

/// `15 s`, `0.3 s`: a duration as the person at the terminal reads it.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 || s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

fn short(text: &str) -> String {
    let t = text.trim();
    let mut s: String = t.chars().take(300).collect();
    if t.chars().count() > 300 {
        s.push('…');
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn non_finite_values_go_as_strings() {
        let p = |v| Point {
            key: "k".into(),
            value: v,
            timestamp_ms: 5,
            step: 2,
        };
        let j = serde_json::to_value([p(f64::NAN), p(f64::INFINITY), p(f64::NEG_INFINITY), p(0.5)])
            .unwrap();
        assert_eq!(j[0]["value"], "NaN");
        assert_eq!(j[1]["value"], "Infinity");
        assert_eq!(j[2]["value"], "-Infinity");
        assert_eq!(j[3]["value"], 0.5);
        assert_eq!(j[3]["step"], 2);
        assert!(number(&json!("NaN")).unwrap().is_nan());
        assert_eq!(number(&json!(1.5)), Some(1.5));
        assert_eq!(number(&json!("2.5")), Some(2.5));
    }

    #[test]
    fn batches_respect_every_limit() {
        let metrics: Vec<Point> = (0..2500)
            .map(|i| Point {
                key: "m".into(),
                value: i as f64,
                timestamp_ms: i,
                step: i,
            })
            .collect();
        let kv = |n: usize, p: &str| -> Vec<(String, String)> {
            (0..n).map(|i| (format!("{p}{i}"), i.to_string())).collect()
        };
        let (params, tags) = (kv(250, "p"), kv(130, "t"));
        let b = batches(&metrics, &params, &tags);
        let len = |v: &Value, k: &str| v[k].as_array().unwrap().len();
        for r in &b {
            assert!(len(r, "metrics") <= MAX_METRICS);
            assert!(len(r, "params") <= MAX_PARAMS);
            assert!(len(r, "tags") <= MAX_TAGS);
            assert!(len(r, "metrics") + len(r, "params") + len(r, "tags") <= MAX_ENTRIES);
        }
        let total = |k: &str| b.iter().map(|r| len(r, k)).sum::<usize>();
        assert_eq!(
            (total("metrics"), total("params"), total("tags")),
            (2500, 250, 130)
        );
        // Order is kept: the first batch starts at point 0, the last ends at 2499.
        assert_eq!(b[0]["metrics"][0]["step"], 0);
        let last = b.last().unwrap()["metrics"].as_array().unwrap();
        assert_eq!(last.last().unwrap()["step"], 2499);
        assert!(batches(&[], &[], &[]).is_empty());
    }

    /// A loopback port that accepts connections and never answers; the
    /// accepted sockets are held open for the life of the test process.
    pub(crate) fn silent_server() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().flatten() {
                held.push(s);
            }
        });
        uri
    }

    fn quick(timeout_ms: u64) -> RetryPolicy {
        RetryPolicy {
            timeout: Duration::from_millis(timeout_ms),
            first_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn a_silent_server_costs_one_timeout_not_one_per_attempt() {
        let c = Client::with_policy(&silent_server(), None, quick(300)).unwrap();
        let t = Instant::now();
        let e = c.get("experiments/get-by-name", &[]).unwrap_err();
        let took = t.elapsed();
        assert!(matches!(e, Error::Unreachable { attempts: 1, .. }), "{e:?}");
        assert!(e.is_transient());
        assert!(
            e.to_string()
                .contains("no answer to experiments/get-by-name within 0.3 s"),
            "{e}"
        );
        // One timeout; four would take 1.2 s.
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(900),
            "{took:?}"
        );
        let t = Instant::now();
        assert!(!c.answers());
        assert!(t.elapsed() < Duration::from_millis(900));
    }

    #[test]
    fn a_refused_connection_is_still_retried() {
        // Bound, then closed: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::with_policy(&format!("http://127.0.0.1:{port}"), None, quick(300)).unwrap();
        let e = c.post("runs/create", json!({})).unwrap_err();
        assert!(matches!(e, Error::Unreachable { attempts: 4, .. }), "{e:?}");
        assert!(e.to_string().contains("connection failed"), "{e}");
    }

    #[test]
    fn nothing_is_sent_past_the_deadline() {
        let mut c = Client::with_policy(&silent_server(), None, quick(5000)).unwrap();
        c.set_deadline(Some(Instant::now() + Duration::from_millis(200)));
        let t = Instant::now();
        // The deadline cuts the 5 s timeout short...
        let e = c.get("runs/get", &[]).unwrap_err();
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        assert!(e.is_transient(), "{e}");
        // ...and once it has passed, nothing starts at all.
        let t = Instant::now();
        let e = c.post("runs/update", json!({})).unwrap_err();
        assert!(t.elapsed() < Duration::from_millis(50));
        assert!(matches!(e, Error::OutOfTime { .. }), "{e:?}");
        assert!(e.is_transient());
        assert!(
            e.to_string()
                .ends_with("runs/update not sent, the time allowed for tracking is over"),
            "{e}"
        );
        assert!(!c.answers());
    }

    #[test]
    fn uploads_get_time_for_their_size_and_the_timeout_is_read_from_the_environment() {
        let p = RetryPolicy::default();
        assert_eq!(p.timeout_for(0), Duration::from_secs(15));
        assert_eq!(p.timeout_for(45 * 256 * 1024), Duration::from_secs(60));
        assert_eq!(
            parse_seconds(TIMEOUT_VAR, " 2.5 "),
            Ok(Duration::from_millis(2500))
        );
        for bad in ["0", "-3", "ten", "inf", "NaN"] {
            let e = parse_seconds(TIMEOUT_VAR, bad).unwrap_err();
            assert_eq!(
                e,
                format!("{TIMEOUT_VAR}='{bad}': expected a number of seconds above 0")
            );
        }
        assert_eq!(seconds(Duration::from_secs(15)), "15 s");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5 s");
    }

    #[test]
    fn keys_are_checked_like_the_server() {
        assert!(valid_key("train/loss"));
        assert!(valid_key("test/f1/angry"));
        assert!(!valid_key("a..b/../c"));
        assert!(!valid_key("/abs"));
        assert!(!valid_key("bad*key"));
        assert!(!valid_key(&"x".repeat(251)));
    }
}
