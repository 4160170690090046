//! Statistics a researcher can check: intervals and McNemar's test against
//! SciPy on fixed vectors, per-image predictions from `fer eval`, and
//! `fer compare` on two shipped models of the real PublicTest half.

use crate::common::{self, fer};
use fer::eval::stats;
use std::process::Command;

/// Deterministic labels and two models' predictions over 7 classes: A right
/// on about 70% of images, B on about 64%, partly on the same images.
fn vectors(n: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let truth: Vec<u8> = (0..n).map(|i| ((i * 5 + i / 7) % 7) as u8).collect();
    let wrong = |t: u8, i: usize| ((t as usize + 1 + i % 6) % 7) as u8;
    let a: Vec<u8> = (0..n)
        .map(|i| {
            if (i * 37) % 100 < 70 {
                truth[i]
            } else {
                wrong(truth[i], i)
            }
        })
        .collect();
    let b: Vec<u8> = (0..n)
        .map(|i| {
            if (i * 37 + 11) % 100 < 64 {
                truth[i]
            } else {
                wrong(truth[i], i + 1)
            }
        })
        .collect();
    (truth, a, b)
}

#[test]
fn mcnemar_and_bootstrap_intervals_agree_with_scipy() {
    let (truth, a, b) = vectors(3589);
    let (only_a, only_b) = stats::discordant(&truth, &a, &b);
    let ours_p = stats::mcnemar_exact(only_a, only_b);
    let ours = stats::intervals(
        &truth,
        &a,
        7,
        &[stats::Figure::Accuracy],
        stats::RESAMPLES,
        stats::SEED,
    )[0];
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("v.json");
    std::fs::write(
        &input,
        serde_json::to_vec(
            &serde_json::json!({"truth": truth, "a": a, "counts": [only_a, only_b]}),
        )
        .unwrap(),
    )
    .unwrap();
    // SciPy's exact binomial test (what statsmodels' exact McNemar is), and
    // a class-stratified percentile bootstrap of accuracy in NumPy with
    // another generator and 20,000 resamples.
    let script = r#"
import json, sys
import numpy as np
from scipy.stats import binomtest
v = json.load(open(sys.argv[1]))
b, c = v["counts"]
p = binomtest(min(b, c), b + c, 0.5).pvalue
t = np.array(v["truth"]); a = np.array(v["a"]); right = (t == a)
rng = np.random.default_rng(1)
strata = [np.flatnonzero(t == k) for k in range(7)]
acc = np.empty(20000)
for r in range(20000):
    idx = np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata])
    acc[r] = right[idx].mean()
print(json.dumps({"p": p, "acc": right.mean(), "lo": np.percentile(acc, 2.5), "hi": np.percentile(acc, 97.5)}))
"#;
    let venv = std::env::var("VIRTUAL_ENV").unwrap_or_else(|_| ".venv".into());
    let out = common::run_ok(
        Command::new(format!("{venv}/bin/python"))
            .args(["-c", script])
            .arg(&input),
    );
    let want: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = |k: &str| want[k].as_f64().unwrap();
    assert!(only_a + only_b > 500, "{only_a} {only_b}: a real test");
    assert!(
        (ours_p - f("p")).abs() <= 1e-9 * f("p").max(1e-300) + 1e-15,
        "McNemar p {ours_p} against SciPy's {}",
        f("p")
    );
    common::assert_same_fraction(ours.value, f("acc"), "accuracy");
    // Two bootstraps of 2,000 and 20,000 resamples: percentiles within
    // 0.3 points (the interval is about 3 points wide).
    for (got, w) in [(ours.lo, f("lo")), (ours.hi, f("hi"))] {
        assert!(
            (got - w).abs() < 0.003,
            "interval {ours:?} against [{}, {}]",
            f("lo"),
            f("hi")
        );
    }
    // The same pair, other counts: a tie and a lopsided split.
    for (x, y) in [(40u64, 40u64), (3, 30)] {
        let p = stats::mcnemar_exact(x, y);
        let out = common::run_ok(Command::new(format!("{venv}/bin/python")).args([
            "-c",
            &format!(
                "from scipy.stats import binomtest; print(binomtest({}, {}, 0.5).pvalue)",
                x.min(y),
                x + y
            ),
        ]));
        let s: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!((p - s).abs() <= 1e-9 * s, "({x}, {y}): {p} against {s}");
    }
}

/// `fer eval --predictions` writes a row per image; `fer compare` on the
/// zoo CNN and MLP finds the CNN better on PublicTest, with McNemar's
/// counts equal to those of the two prediction files, and a model compared
/// with itself differs by nothing.
#[test]
fn compare_two_shipped_models_on_public_test_with_their_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let zoo = common::repo().join("models/zoo");
    let (cnn, mlp) = (zoo.join("cnn.safetensors"), zoo.join("mlp.safetensors"));
    let mut correct = Vec::new();
    for (m, name) in [(&cnn, "cnn"), (&mlp, "mlp")] {
        let csv = tmp.path().join(format!("{name}.csv"));
        common::run_ok(
            fer()
                .arg("eval")
                .arg(m)
                .arg("--predictions")
                .arg(&csv)
                .arg("--data")
                .arg(common::fer_dir()),
        );
        let mut r = csv::Reader::from_path(&csv).unwrap();
        let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(
            header[..5],
            ["image", "origin", "true", "predicted", "correct"]
        );
        assert_eq!(header.len(), 5 + 7, "{header:?}");
        let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
        assert_eq!(rows.len(), 3589);
        for row in &rows {
            let p: f64 = (5..12).map(|j| row[j].parse::<f64>().unwrap()).sum();
            assert!((p - 1.0).abs() < 1e-4, "probabilities sum to {p}: {row:?}");
            assert_eq!(&row[4] == "1", row[2] == row[3]);
        }
        correct.push(rows.iter().map(|r| &r[4] == "1").collect::<Vec<bool>>());
        // Refused the second time without --replace, the file kept.
        let again = fer()
            .arg("eval")
            .arg(m)
            .arg("--predictions")
            .arg(&csv)
            .output()
            .unwrap();
        assert_eq!(again.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&again.stderr).contains("--replace"));
    }
    let only_cnn = (0..3589)
        .filter(|&i| correct[0][i] && !correct[1][i])
        .count() as u64;
    let only_mlp = (0..3589)
        .filter(|&i| !correct[0][i] && correct[1][i])
        .count() as u64;

    let out = common::run_ok(
        fer()
            .arg("compare")
            .arg(&mlp)
            .arg(&cnn)
            .args(["--half", "public", "--json", "--data"])
            .arg(common::fer_dir()),
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["images"], 3589);
    assert_eq!(c["subset"], "PublicTest");
    assert_eq!(c["best"], 1, "the CNN is the more accurate: {c}");
    let v = &c["versus"][0];
    assert_eq!(v["only_this"].as_u64(), Some(only_mlp));
    assert_eq!(v["only_best"].as_u64(), Some(only_cnn));
    let d = &v["accuracy"];
    common::assert_same_fraction(
        d["value"].as_f64().unwrap(),
        (only_mlp as f64 - only_cnn as f64) / 3589.0,
        "the accuracy difference is the discordant counts' difference",
    );
    assert!(d["lo"].as_f64().unwrap() < d["value"].as_f64().unwrap());
    assert!(
        d["hi"].as_f64().unwrap() < 0.0,
        "the interval excludes no difference: {d}"
    );
    assert!(v["p_mcnemar"].as_f64().unwrap() < 1e-6);
    assert!(v["verdict"].as_str().unwrap().contains("beats"), "{v}");
    let rows = c["models"].as_array().unwrap();
    common::assert_same_fraction(
        rows[1]["accuracy"]["value"].as_f64().unwrap(),
        correct[0].iter().filter(|&&x| x).count() as f64 / 3589.0,
        "fer compare and fer eval score the CNN alike",
    );

    // One model twice: no difference, p 1, no claim.
    let out = common::run_ok(
        fer()
            .arg("compare")
            .arg(&mlp)
            .arg(&mlp)
            .arg("--data")
            .arg(common::fer_dir()),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no significant difference (p 1.000"),
        "{text}"
    );
    assert!(!text.contains("beats"), "{text}");
}
