//! `fer quantize` on real models trained on real FER-2013: the int8 file is
//! smaller, keeps its accuracy, gives the same numbers in `fer eval`, serves
//! a real photo, and the accuracy gate refuses to write a file. Float
//! networks predict the same in either convolution kernel layout.

use crate::common;

use serde_json::Value;
use std::path::Path;

use common::fer;

fn train(dir: &Path, config: &str, sets: &[&str]) {
    let mut c = fer();
    c.args(["train", config, "--run-dir"]).arg(dir);
    for s in sets {
        c.args(["--set", s]);
    }
    common::run_ok(&mut c);
}

fn quantize(model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    fer()
        .arg("quantize")
        .arg(model)
        .arg("--out")
        .arg(out)
        .args(["--json", "--seconds", "0.05", "--calibration", "256"])
        .args(extra)
        .output()
        .unwrap()
}

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn int8_models_keep_accuracy_shrink_evaluate_and_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // The last block's conv has 64 input channels: it and the head run in int8.
    let cnn = t.join("cnn");
    train(
        &cnn,
        "configs/cnn.yaml",
        &[
            "train.subset=0.5",
            "train.epochs=1",
            "model.widths=[16,64,64]",
            "model.convs=1",
            "model.dropout=0",
            "train.optimizer={kind: adamw, lr: 0.003, weight_decay: 0.0}",
            "data.augment.erasing=0",
            "data.augment.rotation=0",
        ],
    );
    let mlp = t.join("mlp");
    train(
        &mlp,
        "configs/mlp.yaml",
        // One epoch: the zoo recipe's rate and erasing are for 200.
        &[
            "train.subset=0.1",
            "train.epochs=1",
            "model.hidden=[256]",
            "train.optimizer.lr=0.001",
            "data.augment.erasing=0",
        ],
    );

    for (run, family, layers, int8_layers) in [(&cnn, "cnn", 4, 2), (&mlp, "mlp", 2, 2)] {
        let q = t.join(format!("{family}-int8.safetensors"));
        let v = json(&quantize(run, &q, &["--max-drop", "100"]));
        assert_eq!(v["family"], family);
        assert_eq!(v["layers"], layers, "{v}");
        assert_eq!(v["int8_layers"], int8_layers, "{v}");
        assert_eq!(v["written"], true);
        // Weights dominate the file, and int8 stores a quarter of fp32's bytes.
        let (fp, i8) = (
            v["fp32"]["file_bytes"].as_f64().unwrap(),
            v["int8"]["file_bytes"].as_f64().unwrap(),
        );
        assert_eq!(i8, std::fs::metadata(&q).unwrap().len() as f64);
        assert!(i8 < 0.4 * fp, "{family}: int8 {i8} bytes vs fp32 {fp}");
        // Quantization costs little accuracy on 2873 val and 3589 test images.
        for split in ["val_accuracy", "test_accuracy"] {
            let (a, b) = (
                v["fp32"][split].as_f64().unwrap(),
                v["int8"][split].as_f64().unwrap(),
            );
            // Above the 24.9% of always answering "happy": the model learned.
            assert!(a > 0.28, "{family} fp32 {split} {a}");
            assert!((a - b).abs() < 0.02, "{family} {split}: fp32 {a} int8 {b}");
        }
        for side in ["fp32", "int8"] {
            for b in ["ms_batch1", "ms_batch32"] {
                assert!(v[side][b].as_f64().unwrap() > 0.0);
            }
        }

        // `fer eval` on the int8 file gives the numbers `fer quantize` printed.
        let e = json(&fer().arg("eval").arg(&q).arg("--json").output().unwrap());
        let acc = e["overall"]["accuracy"].as_f64().unwrap();
        assert!(
            (acc - v["int8"]["test_accuracy"].as_f64().unwrap()).abs() < 1e-9,
            "eval {acc} vs quantize {}",
            v["int8"]["test_accuracy"]
        );
        let text = common::run_ok(fer().arg("eval").arg(&q));
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains(&format!("int8: {int8_layers} of {layers} layers")),
            "{text}"
        );
    }

    // The int8 CNN serves a real photo.
    let mut cmd = fer();
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--model"])
        .arg(t.join("cnn-int8.safetensors"))
        .arg("--drift-log")
        .arg(t.join("predictions.jsonl"));
    let server = common::spawn_server(cmd);
    let r = reqwest::blocking::Client::new()
        .post(format!("{}api/predict", server.url))
        .body(std::fs::read(common::astronaut()).unwrap())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().unwrap();
    drop(server);
    assert_eq!(status, 200, "{body}");
    let faces = body["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1, "{body}");
    let probs: Vec<f64> = serde_json::from_value(faces[0]["probs"].clone()).unwrap();
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-3);

    // The gate: a drop limit no model can meet writes nothing.
    let gated = t.join("gated.safetensors");
    let out = quantize(&cnn, &gated, &["--max-drop=-100"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-drop") && err.contains("not written"),
        "{err}"
    );
    assert!(!gated.exists());
    // Nothing finished is overwritten: an existing --out is refused unless
    // --replace, and the model being quantized is refused always.
    let q = t.join("mlp-int8.safetensors");
    let before = std::fs::read(&q).unwrap();
    let out = quantize(&mlp, &q, &["--max-drop", "100"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("exists already") && err.contains("--replace"),
        "{err}"
    );
    assert_eq!(std::fs::read(&q).unwrap(), before);
    let own = mlp.join("model.safetensors");
    let float = std::fs::read(&own).unwrap();
    let out = quantize(&mlp, &own, &["--max-drop", "100", "--replace"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a file this command reads"), "{err}");
    assert_eq!(std::fs::read(&own).unwrap(), float);
    let v = json(&quantize(&mlp, &q, &["--max-drop", "100", "--replace"]));
    assert_eq!(v["written"], true);
    // Clear errors for what cannot be quantized.
    let again = quantize(&t.join("cnn-int8.safetensors"), &t.join("x"), &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already an int8 model file"));
    let majority = t.join("majority");
    train(&majority, "configs/majority.yaml", &[]);
    let base = quantize(&majority, &t.join("y"), &[]);
    assert!(!base.status.success());
    assert!(String::from_utf8_lossy(&base.stderr).contains("baseline has no weights"));
}

/// Float networks load with NHWC kernels (oneDNN's fast layout); NCHW gives
/// the same probabilities on real test faces to float rounding, for the
/// release CNN and the zoo ViT, with and without ten crops, and switching
/// back and forth changes nothing. int8 files (the zoo's CNN and ResNet18
/// ship as int8) and kernel-free networks keep theirs.
#[test]
fn the_kernel_layout_changes_speed_not_predictions() {
    use fer::artifact::{Classifier, DataUse, Layout};
    let repo = common::repo();
    for file in [
        "models/fer-release.safetensors",
        "models/zoo/vit.safetensors",
    ] {
        let mut clf = Classifier::load(&repo.join(file), tch::Device::Cpu).unwrap();
        assert_eq!(clf.layout, Layout::Nhwc, "{file}");
        let test = clf
            .meta
            .load_data(Some(&common::fer_dir()), DataUse::Test)
            .unwrap()
            .loaded
            .data
            .test;
        let some = test.select(&(0..test.len()).step_by(15).collect::<Vec<_>>());
        for tta in [false, true] {
            let nhwc = clf.predict_set(&some, tta, 64).unwrap();
            assert!(clf.set_layout(Layout::Nchw));
            let nchw = clf.predict_set(&some, tta, 64).unwrap();
            assert!(clf.set_layout(Layout::Nhwc));
            assert_eq!(nhwc, clf.predict_set(&some, tta, 64).unwrap(), "{file}");
            let worst = common::max_gap(&nhwc, &nchw);
            assert!(worst < 1e-4, "{file} tta {tta}: {worst}");
        }
        // The kernels really moved: a conv weight [O, I, kh, kw] with I > 1
        // has the input channels innermost in NHWC (the ViT has one
        // convolution, on one channel).
        let strides = |clf: &Classifier| {
            let vars = clf.vs.as_ref().unwrap().variables();
            vars.values()
                .find(|v| v.dim() == 4 && v.size()[1] > 1)
                .map(|w| w.stride())
        };
        if let Some(s) = strides(&clf) {
            assert_eq!(s[1], 1, "{file}: NHWC {s:?}");
            clf.set_layout(Layout::Nchw);
            assert_eq!(strides(&clf).unwrap()[3], 1, "{file}: NCHW");
        } else {
            assert!(file.contains("vit"), "{file} has multi-channel kernels");
        }
    }
    let mut mlp =
        Classifier::load(&repo.join("models/zoo/mlp.safetensors"), tch::Device::Cpu).unwrap();
    assert!(
        !mlp.set_layout(Layout::Nchw),
        "an MLP has no kernels to move"
    );
    for file in [
        "models/fer-release-int8.safetensors",
        "models/zoo/resnet18.safetensors",
    ] {
        let mut int8 = Classifier::load(&repo.join(file), tch::Device::Cpu).unwrap();
        assert!(int8.quant.is_some(), "{file} is int8");
        assert_eq!(int8.layout, Layout::Nchw, "{file}");
        assert!(
            !int8.set_layout(Layout::Nhwc),
            "{file}: int8 kernels take NCHW"
        );
    }
}
