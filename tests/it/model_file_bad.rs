//! Mutated copies of the real release model under the real `fer eval`,
//! `fer quantize` and `fer serve`: each is refused with an ordinary error
//! exit (status 2, no signal, no panic) whose message names the file and the
//! field or tensor, including a model whose finite weights overflow to
//! non-finite outputs on the real test set.

use crate::common::{self, fer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

fn release() -> PathBuf {
    common::repo().join("models/fer-release.safetensors")
}

/// A safetensors file as its header (JSON) and data bytes.
struct Parts {
    header: Value,
    data: Vec<u8>,
}

impl Parts {
    fn read(path: &Path) -> Parts {
        let bytes = std::fs::read(path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        Parts {
            header: serde_json::from_slice(&bytes[8..8 + n]).unwrap(),
            data: bytes[8 + n..].to_vec(),
        }
    }

    /// `fer.meta` as JSON, to edit.
    fn meta(&mut self, edit: impl FnOnce(&mut Value)) -> &mut Parts {
        let md = &mut self.header["__metadata__"]["fer.meta"];
        let mut meta: Value = serde_json::from_str(md.as_str().unwrap()).unwrap();
        edit(&mut meta);
        *md = Value::String(meta.to_string());
        self
    }

    /// Sets every f32 of tensor `name` to `v`.
    fn fill(&mut self, name: &str, v: f32) -> &mut Parts {
        let t = &self.header[name];
        assert_eq!(t["dtype"], "F32", "{name}");
        let (s, e) = (
            t["data_offsets"][0].as_u64().unwrap() as usize,
            t["data_offsets"][1].as_u64().unwrap() as usize,
        );
        for c in self.data[s..e].chunks_exact_mut(4) {
            c.copy_from_slice(&v.to_le_bytes());
        }
        self
    }

    fn write(&self, path: &Path) -> PathBuf {
        let h = self.header.to_string();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&self.data);
        std::fs::write(path, out).unwrap();
        path.to_path_buf()
    }
}

/// Asserts an ordinary error exit (status 2: not a panic's 101, not a
/// signal) whose message names `file` and each of `want`; returns stderr.
fn refused(out: &Output, file: &Path, want: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    for w in want {
        assert!(err.contains(w), "wanted '{w}' in: {err}");
    }
    assert!(out.stdout.is_empty(), "no metrics for a refused model");
    err
}

fn eval(file: &Path) -> Output {
    fer().arg("eval").arg(file).arg("--json").output().unwrap()
}

#[test]
fn eval_and_serve_refuse_inconsistent_release_model_copies_by_field() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut cases: Vec<(PathBuf, Vec<&str>)> = Vec::new();
    let mut case = |name: &str, edit: &dyn Fn(&mut Parts), want: Vec<&'static str>| {
        let mut p = Parts::read(&release());
        edit(&mut p);
        cases.push((p.write(&t.join(format!("{name}.safetensors"))), want));
    };
    case(
        "no-widths",
        &|p| {
            p.meta(|m| m["model"]["widths"] = serde_json::json!([]));
        },
        vec!["fer.meta.model.widths"],
    );
    case(
        "huge-input",
        &|p| {
            p.meta(|m| m["preprocess"]["size"] = serde_json::json!(1u64 << 32));
        },
        vec!["fer.meta.preprocess.size", "1..=48"],
    );
    case(
        "input-too-small",
        &|p| {
            p.meta(|m| m["preprocess"]["size"] = serde_json::json!(8));
        },
        vec!["fer.meta.model.widths", "8px input pools below 1px"],
    );
    case(
        "more-blocks",
        &|p| {
            p.meta(|m| m["model"]["widths"] = serde_json::json!([48, 96, 176, 352, 4096]));
        },
        vec![
            "fer.meta.model",
            "the metadata does not describe these tensors",
        ],
    );
    case(
        "prior-6",
        &|p| {
            p.meta(|m| m["prior"] = serde_json::json!([0.2, 0.2, 0.2, 0.2, 0.1, 0.1]));
        },
        vec!["fer.meta.prior", "one per class (7)"],
    );
    case(
        "class-twice",
        &|p| {
            p.meta(|m| m["classes"][1] = serde_json::json!("Angry"));
        },
        vec!["fer.meta.classes", "\"Angry\" is listed twice"],
    );
    case(
        "six-classes-seven-outputs",
        &|p| {
            p.meta(|m| {
                m["classes"].as_array_mut().unwrap().pop();
            });
        },
        vec!["fer.meta.prior", "one per class (6)"],
    );
    case(
        "bias-not-alpha",
        &|p| {
            p.meta(|m| {
                m["logit_adjust"] = serde_json::json!({"alpha": 1.0, "bias": [1, 1, 1, 1, 1, 1, 1]})
            });
        },
        vec!["fer.meta.logit_adjust.bias"],
    );
    case(
        "head-transposed",
        &|p| p.header["head.weight"]["shape"] = serde_json::json!([352, 7]),
        vec!["tensor 'head.weight'", "[352, 7]", "[7, 352]"],
    );
    case(
        "bias-int",
        &|p| p.header["head.bias"]["dtype"] = serde_json::json!("I32"),
        vec!["tensor 'head.bias' is Int", "floating-point"],
    );
    case(
        "nan-weights",
        &|p| {
            p.fill("head.weight", f32::NAN);
        },
        vec!["tensor 'head.weight' holds 2464 values that are NaN or infinite"],
    );
    case(
        "no-head",
        &|p| {
            // Keep the data contiguous: rename rather than remove.
            let h = p.header.as_object_mut().unwrap();
            let v = h.remove("head.bias").unwrap();
            h.insert("tail.bias".into(), v);
        },
        vec!["tensor 'head.bias' missing"],
    );
    // Cut short, and a flipped byte in the header's JSON.
    let bytes = std::fs::read(release()).unwrap();
    let cut = t.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    cases.push((cut, vec!["not a safetensors file"]));
    let mut flipped = bytes.clone();
    flipped[9] = b'!';
    let f = t.join("flipped.safetensors");
    std::fs::write(&f, &flipped).unwrap();
    cases.push((f, vec!["not a safetensors file"]));

    for (file, want) in &cases {
        refused(&eval(file), file, want);
    }

    // `fer serve` refuses to start on the same files (it would otherwise
    // print its address and run until killed).
    for (file, want) in cases.iter().take(3) {
        let mut child = fer()
            .arg("serve")
            .arg("--model")
            .arg(file)
            .args(["--addr", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("fer serve started on {}", file.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        refused(&child.wait_with_output().unwrap(), file, want);
    }
}

#[test]
fn a_model_whose_outputs_are_not_finite_is_not_scored() {
    let tmp = tempfile::tempdir().unwrap();
    // Finite weights whose logits overflow f32 on every face: the last
    // BatchNorm outputs 1 on each of 352 channels, the head sums 352 x 3e38.
    let mut p = Parts::read(&release());
    p.fill("features.3.bn1.weight", 0.0)
        .fill("features.3.bn1.bias", 1.0)
        .fill("head.weight", 3e38);
    let file = p.write(&tmp.path().join("overflow.safetensors"));
    let err = refused(
        &eval(&file),
        &file,
        &["not finite (NaN or infinity) for 3589 of 3589 images"],
    );
    assert!(!err.contains("top2"), "{err}");
    // The quantizer measures the float model first and stops there.
    let out = fer()
        .arg("quantize")
        .arg(&file)
        .arg("--out")
        .arg(tmp.path().join("int8.safetensors"))
        .args(["--calibration", "32", "--seconds", "0.05"])
        .output()
        .unwrap();
    refused(&out, &file, &["not finite"]);
    assert!(!tmp.path().join("int8.safetensors").exists());
}
