//! A blocking MLflow REST client: authentication, retries, batch limits and
//! the server's value-type quirks (see `../shared/docs/mlflow/README.md`).

use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

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
    /// No answer at all (refused, DNS, timeout) after every retry.
    #[error("MLflow at {uri} is unreachable ({what}) after {attempts} attempts")]
    Unreachable {
        uri: String,
        what: String,
        attempts: u32,
    },
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
            Error::Unreachable { .. } => true,
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

/// How hard to try before giving up on one request.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Clone)]
pub struct Client {
    pub uri: String,
    http: reqwest::blocking::Client,
    auth: Option<Auth>,
    pub retry: RetryPolicy,
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
        Client::with_auth(uri, auth)
    }

    pub fn with_auth(uri: &str, auth: Option<Auth>) -> Result<Client, Error> {
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
        let retry = RetryPolicy::default();
        let http = reqwest::blocking::Client::builder()
            .timeout(retry.timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("fer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&format!("building the HTTP client: {e}")))?;
        Ok(Client {
            uri,
            http,
            auth,
            retry,
        })
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
        for attempt in 1..=self.retry.attempts.max(1) {
            let mut rq = self.http.request(method.clone(), url);
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
            match rq.send() {
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
                Err(e) => {
                    last = describe(&e);
                    if attempt == self.retry.attempts {
                        break;
                    }
                }
            }
            tracing::debug!("MLflow {endpoint}: {last}; retrying in {backoff:?}");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
        Err(Error::Unreachable {
            uri: self.uri.clone(),
            what: last,
            attempts: self.retry.attempts,
        })
    }

    fn json_of(&self, r: reqwest::blocking::Response, endpoint: &str) -> Result<Value, Error> {
        let text = r.text().map_err(|e| Error::Protocol {
            uri: self.uri.clone(),
            endpoint: endpoint.into(),
            message: describe(&e),
        })?;
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
        r.bytes().map(|b| b.to_vec()).map_err(|e| Error::Protocol {
            uri: self.uri.clone(),
            endpoint: "artifacts (download)".into(),
            message: describe(&e),
        })
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

fn short(text: &str) -> String {
    let t = text.trim();
    let mut s: String = t.chars().take(300).collect();
    if t.chars().count() > 300 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
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
