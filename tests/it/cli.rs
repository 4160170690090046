//! The `fer` binary end to end: `fer data stats` on the real data, its
//! errors on a missing data set and on a bad config, `fer bench train`, and
//! `fer eval` of a test set with no train/ beside it.

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

/// Copies the first `n` files of each of `classes` in the real `test/` to
/// `dest/<class>/` (copies, so the cache sees files of their own); how many.
fn copy_test_images(dest: &std::path::Path, classes: &[&str], n: usize) -> usize {
    let mut copied = 0;
    for class in classes {
        let src = common::fer_dir().join("test").join(class);
        let mut files: Vec<_> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        std::fs::create_dir_all(dest.join(class)).unwrap();
        for f in files.iter().take(n) {
            std::fs::copy(f, dest.join(class).join(f.file_name().unwrap())).unwrap();
            copied += 1;
        }
    }
    copied
}

/// `fer eval MODEL --data DIR --json`: the report, and stderr.
fn eval_json(
    model: &std::path::Path,
    dir: &std::path::Path,
    runs: &std::path::Path,
) -> (serde_json::Value, String) {
    let out = fer(
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            dir.to_str().unwrap(),
            "--json",
        ],
        runs,
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    (serde_json::from_slice(&out.stdout).unwrap(), err)
}

#[test]
fn eval_scores_a_test_only_folder_as_the_full_layout_scores_the_same_images() {
    let runs = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let model = common::repo().join("models/fer-release.safetensors");
    let classes = fer::data::fer2013::CLASSES;
    // A new labelled test set: 50 real test faces a class, no train/.
    let only = tmp.path().join("only");
    let n = copy_test_images(&only.join("test"), &classes, 50);
    assert_eq!(n, 350);
    let (a, err) = eval_json(&model, &only, runs.path());
    assert_eq!(a["split"], "test");
    assert_eq!(a["overall"]["n"], 350, "{a}");
    for (c, m) in a["overall"]["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(m["support"], 50, "class {c}");
    }
    // Its digest covers test/ alone, and the note says so.
    assert!(err.contains("covers test/ alone"), "{err}");
    // The same images in the full layout (with a few train faces beside
    // them), through the loader that needs train/: the same scores.
    let full = tmp.path().join("full");
    copy_test_images(&full.join("test"), &classes, 50);
    for class in classes {
        let src = common::fer_dir().join("train").join(class);
        let f = std::fs::read_dir(&src)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::create_dir_all(full.join("train").join(class)).unwrap();
        std::fs::copy(
            &f,
            full.join("train").join(class).join(f.file_name().unwrap()),
        )
        .unwrap();
    }
    let (b, err) = eval_json(&model, &full, runs.path());
    assert!(!err.contains("covers test/ alone"), "{err}");
    assert_eq!(a["overall"], b["overall"]);
    assert_eq!(a["by_origin"], b["by_origin"]);
    let acc = a["overall"]["accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.4 && acc < 1.0,
        "release model on 350 test faces: {acc}"
    );

    // A second load is a cache hit that still sees a face added since.
    let (again, _) = eval_json(&model, &only, runs.path());
    assert_eq!(again["overall"], a["overall"]);
    copy_test_images(&tmp.path().join("extra"), &["happy"], 51);
    let extra = std::fs::read_dir(tmp.path().join("extra/happy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    std::fs::copy(
        &extra,
        only.join("test/happy").join(extra.file_name().unwrap()),
    )
    .unwrap();
    let (more, _) = eval_json(&model, &only, runs.path());
    assert_eq!(more["overall"]["n"], 351);

    // No validation split without train/: refused, naming it.
    let out = fer(
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            only.to_str().unwrap(),
            "--split",
            "val",
        ],
        runs.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(only.to_str().unwrap())
            && err.contains("no train/ folder")
            && err.contains("no validation split"),
        "{err}"
    );
    // A class folder that is not one of the seven: refused, naming it.
    copy_test_images(&tmp.path().join("odd"), &["happy"], 1);
    std::fs::rename(tmp.path().join("odd/happy"), only.join("test/happiness")).unwrap();
    let out = fer(
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            only.to_str().unwrap(),
        ],
        runs.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown class folder test/happiness") && err.contains("angry, disgust"),
        "{err}"
    );
    // Neither train/ nor test/: the folder and the layout expected.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = fer(
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            empty.to_str().unwrap(),
        ],
        runs.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(empty.to_str().unwrap())
            && err.contains("<dir>/test/<class>/")
            && err.contains("test/<class>/ alone"),
        "{err}"
    );
}
