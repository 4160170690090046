//! The `fer` binary end to end: `fer data stats` on the real data, its
//! errors on a missing data set and on a bad config, and `fer bench train`.

use crate::common;

fn fer(args: &[&str], runs: &std::path::Path) -> std::process::Output {
    common::fer_bin()
        .args(args)
        .env("FER_RUNS_DIR", runs)
        .env_remove("FER2013_DIR")
        .output()
        .unwrap()
}

#[test]
fn data_stats_json_on_the_real_data() {
    let runs = tempfile::tempdir().unwrap();
    let dir = common::fer_dir();
    let out = fer(
        &["data", "stats", "--data", dir.to_str().unwrap(), "--json"],
        runs.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let split = |name: &str| {
        v["splits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["split"] == name)
            .unwrap()["total"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(split("train (all)"), 28_709);
    assert_eq!(split("train") + split("val"), 28_709);
    assert_eq!(split("test: PublicTest"), 3_589);
    assert!((v["imbalance_ratio"].as_f64().unwrap() - 7215.0 / 436.0).abs() < 1e-9);
    assert_eq!(v["digest"].as_str().unwrap().len(), 64);
    // The chart was written and is a real, non-trivial PNG.
    let png = runs.path().join("data/class_distribution.png");
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (900, 500));
    let colours: std::collections::HashSet<_> = img.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 20, "chart looks blank");
}

#[test]
fn missing_data_set_exits_2_with_kaggle_instructions() {
    let runs = tempfile::tempdir().unwrap();
    let out = fer(
        &["data", "stats", "--data", "/nonexistent/fer2013"],
        runs.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("msambare/fer2013") && err.contains("/nonexistent/fer2013"),
        "{err}"
    );
}

#[test]
fn bad_data_config_names_file_line_and_choices() {
    let runs = tempfile::tempdir().unwrap();
    let cfg = runs.path().join("data.yaml");
    std::fs::write(&cfg, "val_fraction: 0.1\non_bad_input: ignore\n").unwrap();
    let out = fer(
        &["data", "stats", "--config", cfg.to_str().unwrap()],
        runs.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data.yaml:2:") && err.contains("skip"),
        "{err}"
    );
    std::fs::write(&cfg, "val_fraction: 1.5\n").unwrap();
    let out = fer(
        &["data", "stats", "--config", cfg.to_str().unwrap()],
        runs.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("val_fraction") && err.contains("data.yaml"),
        "{err}"
    );
}

/// `fer bench train` measures each mode on both sides: fer's trainer step and
/// the PyTorch script's, with the same precision and layout.
#[test]
fn bench_train_compares_fp32_and_bf16_against_pytorch() {
    let runs = tempfile::tempdir().unwrap();
    let dir = common::fer_dir();
    let out = fer(
        &[
            "bench",
            "train",
            "--data",
            dir.to_str().unwrap(),
            "--families",
            "cnn",
            "--modes",
            "fp32,bf16-nhwc",
            "--warmup",
            "1",
            "--batches",
            "2",
            "--json",
        ],
        runs.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let modes: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["fp32", "bf16-nhwc"]);
    for r in &rows {
        assert_eq!(r["family"], "cnn");
        assert_eq!(r["params"], 1174439);
        for k in [
            "rust_model_only",
            "rust_end_to_end",
            "torch_model_only",
            "torch_end_to_end",
        ] {
            let v = r[k].as_f64().unwrap_or(0.0);
            assert!(v > 1.0 && v.is_finite(), "{k} = {} in {r}", r[k]);
        }
    }

    let bad = fer(
        &["bench", "train", "--no-python", "--modes", "fp16"],
        runs.path(),
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("unknown mode 'fp16'") && err.contains("bf16-nhwc"),
        "{err}"
    );
}
