//! `fer report` on real runs: small CNN, MLP and majority runs trained on a
//! real FER-2013 subset, and a smoke sweep. Every section and image must be
//! there, every image non-trivial, and a second generation identical.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;

use common::repo;

use common::fer;

fn train(dir: &Path, config: &str, sets: &[&str]) {
    let mut c = fer();
    c.args(["train", config, "--run-dir"]).arg(dir);
    for s in ["train.subset=0.03", "train.epochs=2"].iter().chain(sets) {
        c.args(["--set", s]);
    }
    common::run_ok(&mut c);
}

fn report(input: &Path, out: &Path) -> String {
    report_with(input, out, &[])
}

fn report_with(input: &Path, out: &Path, extra: &[&std::ffi::OsStr]) -> String {
    common::run_ok(
        fer()
            .arg("report")
            .arg(input)
            .arg("--out")
            .arg(out)
            .args(["--robustness-images", "120"])
            .args(extra),
    );
    std::fs::read_to_string(out.join("README.md")).unwrap()
}

/// The images a report links, each checked to be a real, non-trivial chart.
fn check_images(out: &Path, md: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for part in md.split("](").skip(1) {
        let name = part.split(')').next().unwrap();
        if !name.ends_with(".png") {
            continue;
        }
        let img = image::open(out.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .to_rgb8();
        assert!(img.width() >= 300 && img.height() >= 200, "{name} is tiny");
        let colours: BTreeSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        assert!(
            colours.len() >= 20,
            "{name} has {} colours: blank?",
            colours.len()
        );
        let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        let share = non_white as f64 / (img.width() * img.height()) as f64;
        assert!(share > 0.03, "{name}: only {:.1}% drawn", share * 100.0);
        names.insert(name.to_string());
    }
    names
}

#[test]
fn report_of_real_runs_has_every_section_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let zoo = tmp.path().join("zoo");
    train(
        &zoo.join("cnn"),
        "configs/cnn.yaml",
        &["model.widths=[8,16,32]", "model.convs=1"],
    );
    train(&zoo.join("mlp"), "configs/mlp.yaml", &["model.hidden=[64]"]);
    train(&zoo.join("majority"), "configs/majority.yaml", &[]);

    let out = tmp.path().join("report");
    let md = report(&zoo, &out);
    for section in [
        "## 1. Data set",
        "## 2. Baselines comparison",
        "## 3. Per model",
        "## 4. Robustness suite",
        "## 5. Interpretability",
        "## 6. Sweep",
        "## 7. Reproducibility",
    ] {
        assert!(md.contains(section), "missing {section}");
    }
    // The real data set's numbers, and each run in the table.
    assert!(md.contains("| train (all) | 3995 | 436 | 4097 | 7215 | 4830 | 3171 | 4965 | 28709 |"));
    for m in ["| cnn | cnn |", "| mlp | mlp |", "| majority | majority |"] {
        assert!(md.contains(m), "no row {m}");
    }
    assert!(md.contains("Below the 80% target") || md.contains("Every case keeps"));
    assert!(md.contains("Most confused pairs"));
    // The paired tests: every model on the same images, with an interval,
    // and a verdict for each against the most accurate.
    assert!(md.contains("### Which differences are real"), "{md}");
    let verdicts = md
        .lines()
        .filter(|l| l.contains(" beats ") || l.contains("no significant difference (p "))
        .count();
    assert_eq!(verdicts, 2, "one verdict per model but the best:\n{md}");
    // The trade-offs: every network placed against the front, the floor not.
    assert!(md.contains("### Accuracy against cost"), "{md}");
    assert!(md.contains("**on the front**"), "{md}");
    for m in ["| cnn | ", "| mlp | "] {
        assert!(
            md.lines()
                .any(|l| l.starts_with(m) && (l.contains("on the front") || l.contains("behind"))),
            "{m} has no Pareto position:\n{md}"
        );
    }
    let images = check_images(&out, &md);
    for need in [
        "data-classes.png",
        "comparison.png",
        "cnn-curves.png",
        "cnn-confusion.png",
        "cnn-per-class.png",
        "cnn-calibration.png",
        "cnn-robustness.png",
        "cnn-gradcam.png",
        "mlp-robustness.png",
        "errors.png",
        "wallclock.png",
        "tradeoff-latency.png",
        "tradeoff-training.png",
    ] {
        assert!(
            images.contains(need),
            "{need} not in the report: {images:?}"
        );
    }
    // The MLP has no feature maps, so no Grad-CAM; the majority baseline no
    // robustness (it ignores the image).
    assert!(!out.join("mlp-gradcam.png").exists());
    assert!(!out.join("majority-robustness.png").exists());

    // summary.json: one row per model, agreeing with each model file's own
    // metadata and with the run's evaluation.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let rows = summary["models"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let bests = rows
        .iter()
        .filter(|r| r["paired"]["versus_best"].is_null())
        .count();
    assert_eq!(bests, 1, "one model is the reference of the paired tests");
    for row in rows {
        let iv = &row["paired"]["single_crop"]["accuracy"];
        let (lo, v, hi) = (
            iv["lo"].as_f64().unwrap(),
            iv["value"].as_f64().unwrap(),
            iv["hi"].as_f64().unwrap(),
        );
        assert!(lo <= v && v <= hi, "{iv}");
        // Class-stratified resamples keep the class counts, so the majority
        // baseline's accuracy (one class's share) has no spread; a network's has.
        if row["family"] != "majority" {
            assert!(hi - lo > 0.001, "{row}");
        }
        // The run's own evaluation now carries its intervals too.
        assert!(
            row["test_intervals"]["accuracy"]["lo"].as_f64().is_some(),
            "{row}"
        );
    }
    for row in rows {
        let file = std::path::PathBuf::from(row["model_file"].as_str().unwrap());
        let clf = fer::artifact::Classifier::load(&file, tch::Device::Cpu).unwrap();
        let m = &clf.meta;
        assert_eq!(row["family"].as_str().unwrap(), m.model.family());
        assert_eq!(row["params"].as_u64().unwrap(), m.params, "{row}");
        assert_eq!(row["macs"].as_u64().unwrap(), m.macs, "{row}");
        // A baseline's file records no validation accuracy; a network's does.
        if m.model.is_network() {
            let selection = row["selection_val_acc"].as_f64().unwrap();
            common::assert_same_fraction(selection, m.val_accuracy.unwrap(), &format!("{row}"));
            // Without test-time augmentation the run's evaluation is the selection's.
            if row["tta"] == false {
                let val = row["val_acc"].as_f64().unwrap();
                common::assert_same_fraction(val, m.val_accuracy.unwrap(), &format!("{row}"));
            }
        }
        let eval: serde_json::Value = serde_json::from_slice(
            &std::fs::read(Path::new(row["run_dir"].as_str().unwrap()).join("eval.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(row["test_acc"], eval["test"]["overall"]["accuracy"]);
        assert_eq!(
            row["public_test_acc"],
            eval["test"]["by_origin"]["PublicTest"]["accuracy"]
        );
        if m.model.family() != "majority" {
            assert!(row["latency_ms"].as_f64().unwrap() > 0.0, "{row}");
            assert!(row["int8_latency_ms"].as_f64().unwrap() > 0.0, "{row}");
            let kept = row["robustness_retention"].as_f64().unwrap();
            assert!(kept > 0.0 && kept <= 2.0, "{row}");
        }
    }

    // Same folders, same report, byte for byte.
    let again = tmp.path().join("again");
    let md2 = report(&zoo, &again);
    assert_eq!(
        md2.replace(&again.display().to_string(), ""),
        md.replace(&out.display().to_string(), "")
    );
    for name in &images {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name} differs between two generations"
        );
    }

    // Corruption errors relative to a named baseline (the MLP's file): in
    // each network's robustness section, and kept by the regenerate command.
    let base = zoo.join("mlp/model.safetensors");
    let rel = tmp.path().join("relative");
    let md3 = report_with(
        &zoo,
        &rel,
        &["--robustness-baseline".as_ref(), base.as_os_str()],
    );
    let said = format!("Mean corruption error relative to `{}`", base.display());
    assert_eq!(md3.matches(&said).count(), 2, "{md3}");
    assert!(md3.contains("--robustness-baseline"), "{md3}");
    assert!(!md.contains("Mean corruption error"));

    // The robustness suite from `fer eval` agrees with the report's cache.
    let out_json = common::run_ok(fer().arg("eval").arg(zoo.join("cnn")).args([
        "--robustness",
        "--limit",
        "120",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&out_json.stdout).unwrap();
    let rows = v["robustness"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 54, "18 perturbations x 3 severities");
    let cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(zoo.join("cnn/robustness.json")).unwrap()).unwrap();
    assert_eq!(v["robustness"], cached["r"]);

    // Inference benchmark over the same folder: networks only, each batch,
    // the CNN in both kernel layouts (the MLP has no kernels to lay out).
    let b = common::run_ok(fer().args(["bench", "infer"]).arg(&zoo).args([
        "--batches",
        "1,4",
        "--seconds",
        "0.05",
        "--layouts",
        "nchw,nhwc",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "cnn twice and mlp at batch 1 and 4: {v}");
    let layouts: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["family"].as_str().unwrap().to_string(),
                r["layout"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [("cnn", "nchw"), ("cnn", "nhwc"), ("mlp", "-")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(layouts, want);
    assert!(v["peak_gflops"].as_f64().unwrap() > 1.0);
    assert!(v["sgemm_gflops"].as_f64().unwrap() > 1.0);
    for r in rows {
        assert!(r["gflops"].as_f64().unwrap() > 0.0 && r["img_per_s"].as_f64().unwrap() > 0.0);
        let per = r["ms_per_batch"].as_f64().unwrap() / r["batch"].as_f64().unwrap();
        assert!((per - r["ms_per_image"].as_f64().unwrap()).abs() < 1e-9);
    }

    // A sweep report has the sweep section with its charts.
    let sweep = tmp.path().join("sweep");
    common::run_ok(
        fer()
            .arg("sweep")
            .arg(repo().join("experiments/smoke.yaml"))
            .arg("--sweep-dir")
            .arg(&sweep)
            .args(["--set", "search.n_trials=4"]),
    );
    let sout = tmp.path().join("sweep-report");
    let notes = tmp.path().join("notes.md");
    std::fs::write(&notes, "The smoke sweep says *little*.\n").unwrap();
    let smd = report_with(
        &sweep,
        &sout,
        &[
            "--notes".as_ref(),
            notes.as_os_str(),
            "--importance".as_ref(),
            sweep.as_os_str(),
        ],
    );
    assert!(
        smd.contains("### Commentary\n\nThe smoke sweep says *little*.\n"),
        "{smd}"
    );
    // The sweep reported on and the one named with --importance: each ranked.
    assert_eq!(
        smd.matches("**smoke** (all trials, 4 trials").count(),
        2,
        "{smd}"
    );
    assert!(smd.contains("Best configurations"));
    // Four trials are not a ranking, and the report says so.
    assert!(smd.contains("too few trials to rank (4 < 30)"), "{smd}");
    assert!(smd.contains("4 trials with the random sampler"));
    let simages = check_images(&sout, &smd);
    assert!(simages.contains("sweep-history.png") && simages.contains("sweep-params.png"));
}

#[test]
fn report_names_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fer().args(["report", "/no/such/folder"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/folder: no such folder"));
    let out = fer().arg("report").arg(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no finished runs"));
}

/// A run folder whose `eval.json` holds a figure out of range (an accuracy
/// of 3.0) is refused by `fer report`, naming the file and the field, and
/// no report shows 300%.
#[test]
fn report_refuses_figures_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("tiny.yaml");
    std::fs::write(
        &cfg,
        format!(
            "name: tiny\nseed: 1\ndata: {{dir: {}}}\nmodel: {{kind: mlp, hidden: [16]}}\n\
             train: {{epochs: 1, batch_size: 32, subset: 0.02, max_batches: 4}}\n",
            common::fer_dir().display()
        ),
    )
    .unwrap();
    let run = tmp.path().join("run");
    common::run_ok(fer().arg("train").arg(&cfg).arg("--run-dir").arg(&run));
    let eval = run.join("eval.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&eval).unwrap()).unwrap();
    v["test"]["overall"]["accuracy"] = serde_json::json!(3.0);
    std::fs::write(&eval, serde_json::to_vec(&v).unwrap()).unwrap();
    let out_dir = tmp.path().join("report");
    let out = fer()
        .arg("report")
        .arg(&run)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&eval.display().to_string())
            && err.contains("test.overall.accuracy is 3, expected a fraction in [0, 1]"),
        "{err}"
    );
    let md = std::fs::read_to_string(out_dir.join("README.md")).unwrap_or_default();
    assert!(!md.contains("300.0%"), "{md}");
}

/// `fer report` on a folder of model files (two shipped zoo files, one of
/// them int8): each is scored once into a cached run folder of its own, the
/// report compares them with intervals and a paired test, says what a model
/// file cannot tell (training time, curves), and a second report reads the
/// cache instead of scoring again.
#[test]
fn report_of_model_files_scores_each_once_and_says_what_they_lack() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let files = tmp.path().join("zoo");
    std::fs::create_dir_all(&files).unwrap();
    for f in ["classical", "mlp"] {
        std::fs::copy(
            repo().join(format!("models/zoo/{f}.safetensors")),
            files.join(format!("{f}.safetensors")),
        )
        .unwrap();
    }
    let out = tmp.path().join("report");
    let go = || {
        let o = common::run_ok(
            fer()
                .env("FER_RUNS_DIR", &runs)
                .arg("report")
                .arg(&files)
                .arg("--out")
                .arg(&out)
                .args(["--robustness-images", "60"]),
        );
        (
            String::from_utf8_lossy(&o.stderr).to_string(),
            std::fs::read_to_string(out.join("README.md")).unwrap(),
        )
    };
    let (first, md) = go();
    assert_eq!(first.matches("report: scoring").count(), 2, "{first}");
    assert!(md.contains("from 2 model files"), "{md}");
    // The file's own record of its validation accuracy, measured again on
    // the validation split it names (classical models have no TTA to vary).
    let meta = fer::artifact::ModelMeta::read(&files.join("classical.safetensors")).unwrap();
    let val = format!(
        "| classical | classical | {:.1}% |",
        meta.val_accuracy.unwrap() * 100.0
    );
    assert!(md.contains(&val), "{val}\n{md}");
    let row = md.lines().find(|l| l.starts_with("| mlp | mlp |")).unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // training, train img/s and fp32 latency are unknown; int8 latency is its own.
    assert_eq!(&cells[11..14], &["-", "-", "-"], "{row}");
    assert!(cells[14].ends_with(" ms"), "{row}");
    assert!(
        md.contains("Scored from model files (classical, mlp)"),
        "{md}"
    );
    assert!(md.contains("### Which differences are real"), "{md}");
    assert!(md.contains("mlp beats classical"), "{md}");
    assert!(md.contains("none recorded: model file"), "{md}");
    assert!(
        !md.contains("tradeoff-training.png") && !md.contains("-curves.png"),
        "{md}"
    );
    check_images(&out, &md);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let mlp = summary["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["label"] == "mlp")
        .unwrap();
    assert_eq!(
        mlp["model_file"],
        files.join("mlp.safetensors").display().to_string()
    );
    assert!(mlp["latency_ms"].is_null() && mlp["int8_latency_ms"].as_f64().unwrap() > 0.0);
    let recorded = fer::artifact::ModelMeta::read(&files.join("mlp.safetensors"))
        .unwrap()
        .val_accuracy
        .unwrap();
    common::assert_same_fraction(mlp["selection_val_acc"].as_f64().unwrap(), recorded, "mlp");

    // Cached: the second report scores nothing and writes the same tables.
    let (second, again) = go();
    assert!(!second.contains("report: scoring"), "{second}");
    let table = |m: &str| m.split("### Which").next().unwrap().to_string();
    assert_eq!(table(&md), table(&again));

    // A file that is not a model is named, with what the command reads.
    let bad = tmp.path().join("notes.txt");
    std::fs::write(&bad, "not a model").unwrap();
    let err = common::run_fails(fer().env("FER_RUNS_DIR", &runs).arg("report").arg(&bad));
    assert!(
        err.contains("notes.txt") && err.contains("model files"),
        "{err}"
    );
}
