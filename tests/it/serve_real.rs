//! `fer serve` against a real model, a real face photo (scikit-image's
//! public-domain astronaut.png from .venv) and Debian's Haar cascade: the
//! HTTP API, bad payloads, metrics and drift, many clients at once, and the
//! page in headless Chromium with a fake webcam fed from the photo.

use crate::common;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{astronaut, Server};

use common::fer;

fn serve(model: &Path, tmp: &Path, extra: &[&str]) -> Server {
    let mut cmd = fer();
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--model"])
        .arg(model)
        .arg("--drift-log")
        .arg(tmp.join("predictions.jsonl"))
        .args(extra);
    common::spawn_server(cmd)
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn post(url: &str, body: Vec<u8>) -> (u16, String) {
    let r = client()
        .post(format!("{url}api/predict"))
        .body(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn trained_model(tmp: &Path) -> PathBuf {
    let dir = tmp.join("model");
    common::run_ok(
        fer()
            .args(["train", "configs/cnn.yaml", "--run-dir"])
            .arg(&dir)
            .args(["--set", "train.subset=0.03", "--set", "train.epochs=1"])
            .args(["--set", "model.widths=[8,16,32]", "--set", "model.convs=1"]),
    );
    dir
}

#[test]
fn api_finds_the_face_refuses_bad_payloads_and_reports_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let model = trained_model(tmp.path());
    let s = serve(&model, tmp.path(), &[]);

    let photo = std::fs::read(astronaut()).unwrap();
    let (status, body) = post(&s.url, photo.clone());
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(512), Some(512))
    );
    let faces = v["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1, "one face in astronaut.png: {body}");
    let f = &faces[0];
    let classes: Vec<String> = serde_json::from_value(v["classes"].clone()).unwrap();
    assert!(classes.contains(&f["label"].as_str().unwrap().to_string()));
    let probs: Vec<f64> = serde_json::from_value(f["probs"].clone()).unwrap();
    assert_eq!(probs.len(), 7);
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-3);
    let b: Vec<u64> = serde_json::from_value(f["box"].clone()).unwrap();
    // Eileen Collins' face sits in the upper middle of the photo.
    assert!(
        b[0] > 100 && b[0] < 300 && b[1] < 200 && b[2] > 60 && b[2] < 250,
        "box {b:?}"
    );
    for k in ["decode", "detect", "classify", "total"] {
        assert!(v["timing_ms"][k].as_f64().unwrap() >= 0.0);
    }

    // Bad payloads: each a clear 4xx, and the server keeps serving.
    let (st, msg) = post(&s.url, vec![]);
    assert_eq!(st, 400);
    assert!(msg.contains("empty body"), "{msg}");
    let (st, msg) = post(&s.url, b"hello, not an image".to_vec());
    assert_eq!(st, 400);
    assert!(msg.contains("not a decodable image"), "{msg}");
    let (st, msg) = post(&s.url, photo[..photo.len() / 3].to_vec());
    assert_eq!(st, 400, "truncated PNG: {msg}");
    // Over the 4 MiB limit: refused on the declared length, before any body
    // byte (raw TCP, so no client races the early answer with its upload).
    {
        use std::io::{Read, Write};
        let addr = s.url.trim_start_matches("http://").trim_end_matches('/');
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            tcp,
            "POST /api/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
            5 << 20
        )
        .unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 413", "over the 4 MiB limit");
    }
    let h = client().get(format!("{}healthz", s.url)).send().unwrap();
    assert_eq!(h.status().as_u16(), 200);

    // Many clients at once.
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (url, p) = (s.url.clone(), photo.clone());
            std::thread::spawn(move || post(&url, p).0)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }

    // Metrics in Prometheus text, and the drift log.
    let m = client()
        .get(format!("{}metrics", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let value = |line_start: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{m}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("fer_requests_total{endpoint=\"predict\"}"), 11.0);
    assert_eq!(value("fer_errors_total{reason=\"bad_payload\"}"), 3.0);
    assert_eq!(value("fer_errors_total{reason=\"too_large\"}"), 1.0);
    assert_eq!(value("fer_stage_seconds_count{stage=\"total\"}"), 7.0);
    assert_eq!(value("fer_faces_per_frame_sum"), 7.0);
    let predicted: f64 = classes
        .iter()
        .map(|c| value(&format!("fer_predictions_total{{class=\"{c}\"}}")))
        .sum();
    assert_eq!(predicted, 7.0);
    assert!(value("fer_drift_divergence") >= 0.0);
    let log = std::fs::read_to_string(tmp.path().join("predictions.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 7, "one line per processed frame");
    let drift: Value = client()
        .get(format!("{}api/drift", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(drift["faces"], 7);
    // The reference: the model's mean confidence on its validation split.
    let r = drift["train_mean_confidence"].as_f64().unwrap();
    assert!(r > 1.0 / 7.0 && r < 1.0, "{r}");
    assert!(m.contains("fer_drift_reference_confidence"));
    assert!(
        (drift["mean_confidence"].as_f64().unwrap() - f["confidence"].as_f64().unwrap()).abs()
            < 1e-6
    );
}

#[test]
fn serve_names_a_missing_model_or_cascade() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fer().arg("serve").current_dir(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("release model") && err.contains("--model"),
        "{err}"
    );
    // From the repository root the committed release model is the default.
    let mut cmd = fer();
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--drift-log"])
        .arg(tmp.path().join("predictions.jsonl"));
    let s = common::spawn_server(cmd);
    let health: Value = client()
        .get(format!("{}healthz", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    drop(s);
    assert_eq!(health["model"], "release", "{health}");

    let model = trained_model(tmp.path());
    let out = fer()
        .args(["serve", "--cascade-path", "/no/cascade.xml", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/no/cascade.xml") && err.contains("opencv-data"),
        "{err}"
    );
}

/// A minimal WebDriver client over chromedriver.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(video: &Path) -> Browser {
        let port = fer::mlflow::server::free_port().unwrap();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (make setup installs chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        while client().get(format!("{base}/status")).send().is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/lib/chromium/chromium", "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.path().display()),
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                format!("--use-file-for-fake-video-capture={}", video.display()),
                "--window-size=1280,800"]}}}});
        let v: Value = client()
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            _profile: profile,
        }
    }
    fn cmd(&self, path: &str, body: Value) -> Value {
        client()
            .post(format!("{}/session/{}/{path}", self.base, self.session))
            .json(&body)
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()["value"]
            .clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = client()
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn page_draws_labels_from_a_fake_webcam_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let model = trained_model(tmp.path());
    let s = serve(&model, tmp.path(), &[]);
    // The camera: the face photo as a Y4M video (Chromium loops it).
    let video = tmp.path().join("face.y4m");
    common::run_ok(
        Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-i"])
            .arg(astronaut())
            // Letterboxed to 640x480: stretching would squash the face.
            .args([
                "-frames:v",
                "1",
                "-vf",
                "scale=-2:480,pad=640:480:(ow-iw)/2:0,setsar=1",
            ])
            .args(["-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe"])
            .arg(&video),
    );
    let b = Browser::start(&video);
    b.cmd("url", json!({"url": s.url}));
    let t = Instant::now();
    let state = loop {
        let st = b.cmd(
            "execute/sync",
            json!({"script": "return window.ferState || null", "args": []}),
        );
        if st["labelsDrawn"].as_u64().unwrap_or(0) >= 3 {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "no labels drawn after 90 s: {st}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(state["frames"].as_u64().unwrap() >= 3, "{state}");
    assert!(state["lastError"].is_null(), "{state}");
    let labels: Vec<String> = serde_json::from_value(state["lastLabels"].clone()).unwrap();
    assert_eq!(labels.len(), 1, "one face in the fake camera: {state}");
    let title = b.cmd(
        "execute/sync",
        json!({"script": "return document.title", "args": []}),
    );
    assert_eq!(title.as_str().unwrap(), format!("fer: {}", labels[0]));
    let status = b.cmd(
        "execute/sync",
        json!({"script": "return document.getElementById('status').dataset.labelsDrawn", "args": []}),
    );
    assert!(status.as_str().unwrap().parse::<u64>().unwrap() >= 3);
    // The server saw the stream through its WebSocket.
    let m = client()
        .get(format!("{}metrics", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(m.contains("fer_requests_total{endpoint=\"ws\"} 1"), "{m}");
}
