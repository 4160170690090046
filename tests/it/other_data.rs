//! A data set that is not FER-2013: real FER-2013 faces written as 64x64
//! RGB PNGs under six other class names (disgust and fear merged into one),
//! each image with a faked subject id in its file name. It is trained on,
//! cross-validated by subject, and its model is evaluated, run on a photo
//! and served; the release model reads it through a class map.

use crate::common::{self, fer, run_ok};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The six classes, sorted (the order a folder data set takes), and the
/// FER-2013 classes each is made of.
pub const SIX: [(&str, &[&str]); 6] = [
    ("anger", &["angry"]),
    ("astonished", &["surprise"]),
    ("calm", &["neutral"]),
    ("distress", &["disgust", "fear"]),
    ("joy", &["happy"]),
    ("sorrow", &["sad"]),
];

/// Subjects faked per class: image `i` of a class belongs to subject
/// `S<i % SUBJECTS>`, so every subject has images of every class.
const SUBJECTS: usize = 12;

/// Writes the set under `root`: `train/<class>/S<nn>_<k>.png` from the first
/// `n_train` FER-2013 training faces of each source class, `test/` likewise
/// from its test faces (`n_test` each). Returns the test images per class.
pub fn write_six_class_set(root: &Path, n_train: usize, n_test: usize) -> Vec<(String, usize)> {
    let mut test_counts = Vec::new();
    for (split, n) in [("train", n_train), ("test", n_test)] {
        if n == 0 {
            continue;
        }
        for (name, sources) in SIX {
            let out = root.join(split).join(name);
            std::fs::create_dir_all(&out).unwrap();
            let mut k = 0;
            for src in sources {
                let dir = common::fer_dir().join(split).join(src);
                let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                files.sort();
                for f in files.iter().take(n) {
                    let grey = image::open(f).unwrap().to_luma8();
                    let big = image::imageops::resize(
                        &grey,
                        64,
                        64,
                        image::imageops::FilterType::CatmullRom,
                    );
                    // A warm tint: a real colour image, not grey in RGB.
                    let rgb = image::RgbImage::from_fn(64, 64, |x, y| {
                        let v = big.get_pixel(x, y)[0] as f32;
                        image::Rgb([
                            (v * 1.0).min(255.0) as u8,
                            (v * 0.9) as u8,
                            (v * 0.75) as u8,
                        ])
                    });
                    rgb.save(out.join(format!("S{:02}_{k:04}.png", k % SUBJECTS)))
                        .unwrap();
                    k += 1;
                }
            }
            if split == "test" {
                test_counts.push((name.to_string(), k));
            }
        }
    }
    test_counts
}

/// A small experiment on the set at `data` (a tiny CNN, two epochs), with
/// `extra` YAML lines appended at the top level.
pub fn six_class_config(path: &Path, data: &Path, extra: &str) {
    std::fs::write(
        path,
        format!(
            "name: six\nseed: 0\ndata:\n  dir: {}\n  val_fraction: 0.15\nmodel: {{kind: cnn, widths: [8, 16, 32], convs: 1, dropout: 0.1}}\n\
             train: {{epochs: 2, batch_size: 32, optimizer: {{kind: adamw, lr: 0.003}}}}\n{extra}",
            data.display()
        ),
    )
    .unwrap();
}

/// A model trained on a fresh six-class set under `tmp` (its run folder).
pub fn six_class_model(tmp: &Path) -> PathBuf {
    let data = tmp.join("six");
    write_six_class_set(&data, 40, 10);
    let cfg = tmp.join("six.yaml");
    six_class_config(&cfg, &data, "");
    let run = tmp.join("runs/six");
    run_ok(fer().args(["train"]).arg(&cfg).arg("--run-dir").arg(&run));
    run
}

fn six_names() -> Vec<String> {
    SIX.iter().map(|(n, _)| n.to_string()).collect()
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn a_six_class_rgb_set_trains_cross_validates_by_subject_and_its_model_works_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("six");
    let test_counts = write_six_class_set(&data, 60, 12);
    let n_test: usize = test_counts.iter().map(|c| c.1).sum();

    // fer data stats reads the classes from the folders and writes a data
    // config with the training split's normalisation.
    let written = tmp.path().join("six-data.yaml");
    let out = run_ok(
        fer()
            .args(["data", "stats", "--json", "--data"])
            .arg(&data)
            .arg("--write-config")
            .arg(&written)
            .arg("--plot")
            .arg(tmp.path().join("classes.png")),
    );
    let stats = json_of(&out);
    assert_eq!(stats["classes"], serde_json::json!(six_names()));
    let issues = stats["issues"].as_array().unwrap();
    assert!(
        issues.is_empty(),
        "64x64 RGB images are converted, not flagged: {issues:?}"
    );
    let mean = stats["pixel_mean"].as_f64().unwrap();
    assert!((0.3..0.6).contains(&mean), "{mean}");
    let cfg_text = std::fs::read_to_string(&written).unwrap();
    let dc: fer::data::DataConfig = fer::config::parse_yaml(&written, &cfg_text).unwrap();
    assert_eq!(dc.classes.as_deref(), Some(&six_names()[..]));
    assert!((dc.augment.mean as f64 - mean).abs() < 1e-3);
    // Never overwritten.
    let again = fer()
        .args(["data", "stats", "--data"])
        .arg(&data)
        .arg("--write-config")
        .arg(&written)
        .output()
        .unwrap();
    assert!(!again.status.success());

    // Without test/, the test split is a fraction of train or a list.
    let train_only = tmp.path().join("six-train-only");
    std::fs::create_dir_all(&train_only).unwrap();
    std::os::unix::fs::symlink(data.join("train"), train_only.join("train")).unwrap();
    let load = |cfg: fer::data::DataConfig| {
        fer::data::load(&cfg, &tmp.path().join("cache")).map(|l| l.data)
    };
    let base = fer::data::DataConfig {
        dir: train_only.clone(),
        ..Default::default()
    };
    let d = load(fer::data::DataConfig {
        test_fraction: 0.25,
        ..base.clone()
    })
    .unwrap();
    assert_eq!(d.test.len() + d.train.len(), 6 * 60 + 60);
    assert_eq!(d.test.class_counts(6), vec![15, 15, 15, 30, 15, 15]);
    let list = tmp.path().join("test-list.txt");
    std::fs::write(
        &list,
        "# held out
train/joy/S01_0001.png
train/calm/S02_0002.png
",
    )
    .unwrap();
    let d = load(fer::data::DataConfig {
        test_list: Some(list.clone()),
        ..base.clone()
    })
    .unwrap();
    assert_eq!(
        d.test.sources,
        vec!["train/calm/S02_0002.png", "train/joy/S01_0001.png"]
    );
    std::fs::write(
        &list,
        "train/joy/nobody.png
",
    )
    .unwrap();
    let err = load(fer::data::DataConfig {
        test_list: Some(list.clone()),
        ..base
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("test-list.txt:1: 'train/joy/nobody.png' is not an image"),
        "{err}"
    );

    // Named groups within the test split (two recording sites here, by a
    // CSV), each scored apart as FER-2013's halves are.
    let sites = tmp.path().join("sites.csv");
    let mut rows = String::from("file,site\n");
    let mut per_site = [0usize; 2];
    for (name, _) in SIX {
        for e in std::fs::read_dir(data.join("test").join(name)).unwrap() {
            let f = e.unwrap().file_name().into_string().unwrap();
            let s = f[1..3].parse::<usize>().unwrap() % 2;
            per_site[s] += 1;
            rows += &format!("test/{name}/{f},site-{}\n", ["a", "b"][s]);
        }
    }
    std::fs::write(&sites, &rows).unwrap();
    let cut = rows.lines().take(3).collect::<Vec<_>>().join("\n");
    std::fs::write(tmp.path().join("sites-short.csv"), cut).unwrap();
    let err = fer::data::load(
        &fer::data::DataConfig {
            dir: data.clone(),
            test_groups: Some(fer::data::folds::TestGroups {
                group_by: None,
                groups: Some(fer::data::folds::GroupsCsv {
                    path: tmp.path().join("sites-short.csv"),
                    column: "site".into(),
                }),
            }),
            ..Default::default()
        },
        &tmp.path().join("cache"),
    )
    .map(|_| ())
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("sites-short.csv: no row for the image test/") && err.contains("no group"),
        "{err}"
    );

    // Training: the model file carries the six classes.
    let cfg = tmp.path().join("six.yaml");
    six_class_config(&cfg, &data, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "  val_fraction: 0.15\n",
        &format!(
            "  val_fraction: 0.15\n  test_groups: {{groups: {{path: {}, column: site}}}}\n",
            sites.display()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let run = tmp.path().join("runs/six");
    run_ok(fer().args(["train"]).arg(&cfg).arg("--run-dir").arg(&run));
    let meta = fer::artifact::ModelMeta::read(&run.join("model.safetensors")).unwrap();
    assert_eq!(meta.classes, six_names());
    assert_eq!(meta.convert, fer::data::Convert::Resize);

    // eval on its own data: the test folder, scored in its classes, and
    // each site apart.
    let out = run_ok(
        fer()
            .args(["eval", "--json", "--data"])
            .arg(&data)
            .arg(&run),
    );
    let ev = json_of(&out);
    assert_eq!(ev["classes"], serde_json::json!(six_names()));
    assert_eq!(ev["overall"]["n"].as_u64().unwrap() as usize, n_test);
    assert_eq!(ev["overall"]["per_class"].as_array().unwrap().len(), 6);
    let groups: Vec<(&String, u64)> = ev["by_origin"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, m)| (k, m["n"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        groups,
        vec![
            (&"site-a".to_string(), per_site[0] as u64),
            (&"site-b".to_string(), per_site[1] as u64)
        ],
        "{ev}"
    );
    assert!(
        ev["intervals"]["site-b"]["accuracy"]["lo"].is_number(),
        "{ev}"
    );
    let preds = std::fs::read_to_string(run.join("predictions.csv")).unwrap();
    assert_eq!(
        preds.lines().filter(|l| l.contains(",site-a,")).count(),
        per_site[0],
        "the run's predictions name each image's site"
    );

    // predict on a photo: a label of this model.
    let pred = tmp.path().join("pred");
    run_ok(
        fer()
            .args(["predict"])
            .arg(common::astronaut())
            .arg("--model")
            .arg(&run)
            .arg("--out")
            .arg(&pred),
    );
    let csv = std::fs::read_to_string(pred.join("predictions.csv")).unwrap();
    let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    for c in six_names() {
        assert!(head.contains(&c.as_str()), "{head:?}");
    }
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    let label = row[head.iter().position(|h| *h == "label").unwrap()];
    assert!(six_names().iter().any(|c| c == label), "{label}");

    // serve: the API answers in the model's classes, /metrics counts them.
    let mut cmd = fer();
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--model"])
        .arg(&run)
        .arg("--data")
        .arg(&data)
        .arg("--drift-log")
        .arg(tmp.path().join("drift.jsonl"));
    let s = common::spawn_server(cmd);
    let client = reqwest::blocking::Client::new();
    let r: Value = client
        .post(format!("{}api/predict", s.url))
        .body(std::fs::read(common::astronaut()).unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let face = &r["faces"][0];
    assert!(
        six_names().iter().any(|c| face["label"] == c.as_str()),
        "{r}"
    );
    assert_eq!(face["probs"].as_array().unwrap().len(), 6, "{r}");
    let m = client
        .get(format!("{}metrics", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        m.contains("fer_predictions_total{class=\"distress\"}"),
        "{m}"
    );
    drop(s);

    // Cross-validation: three folds grouped by the subject in the file name.
    let cv_cfg = tmp.path().join("six-cv.yaml");
    six_class_config(&cv_cfg, &data, "cv: {folds: 3, group_by: '/(S\\d+)_'}\n");
    let cv_run = tmp.path().join("runs/six-cv");
    let out = run_ok(
        fer()
            .args(["train"])
            .arg(&cv_cfg)
            .arg("--run-dir")
            .arg(&cv_run),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("over 3 folds"), "{text}");
    let seeds: Value =
        serde_json::from_slice(&std::fs::read(cv_run.join("seeds.json")).unwrap()).unwrap();
    assert_eq!(seeds["unit"], "fold");
    assert_eq!(seeds["seeds"], serde_json::json!([1, 2, 3]));
    assert!(seeds["complete"].as_bool().unwrap());
    assert_eq!(seeds["spread"]["test/acc"]["n"], 3);

    // Each fold's splits, as training made them, hold no subject twice.
    let loaded = fer::data::load(
        &fer::data::DataConfig {
            dir: data.clone(),
            ..Default::default()
        },
        &tmp.path().join("cache"),
    )
    .unwrap()
    .data;
    let subject = |src: &String| src.split('/').nth(2).unwrap()[..3].to_string();
    let mut tested: Vec<std::collections::BTreeSet<String>> = Vec::new();
    let mut all_tested = 0;
    for k in 1..=3 {
        let fold = cv_run.join(format!("fold-{k}"));
        let fcfg = fer::config::RunConfig::load(&fold.join("config.yaml"), &[]).unwrap();
        assert_eq!(fcfg.cv.as_ref().unwrap().fold, Some(k));
        let s = fer::train::make_splits(&fcfg, &loaded).unwrap();
        let test: std::collections::BTreeSet<String> = s.test.sources.iter().map(subject).collect();
        let train: std::collections::BTreeSet<String> =
            s.train.sources.iter().map(subject).collect();
        let val: std::collections::BTreeSet<String> = s.val.sources.iter().map(subject).collect();
        assert!(!val.is_empty(), "fold {k} has a validation split");
        assert!(
            val.is_disjoint(&train),
            "fold {k}: validation subjects {val:?} also in train"
        );
        let train: std::collections::BTreeSet<String> = train.union(&val).cloned().collect();
        assert!(test.is_disjoint(&train), "fold {k}: {test:?} also in train");
        for t in &tested {
            assert!(t.is_disjoint(&test), "a subject in two folds' test sets");
        }
        // What the fold's run scored is exactly its held-out fold.
        let preds = std::fs::read_to_string(fold.join("predictions.csv")).unwrap();
        let scored: Vec<&str> = preds
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        let want: Vec<&str> = s.test.sources.iter().map(String::as_str).collect();
        assert_eq!(scored, want, "fold {k}");
        all_tested += s.test.len();
        tested.push(test);
    }
    assert_eq!(
        all_tested,
        loaded.train.len(),
        "every training image is tested once"
    );

    // The report on the folder: each fold scored on its own fold, and the
    // spread across folds; and each fold's model on FER-2013's test split
    // too, read into the six classes.
    let report = tmp.path().join("report");
    let fer_test = common::fer_dir().join("test");
    let fer_n: usize = std::fs::read_dir(&fer_test)
        .unwrap()
        .map(|c| std::fs::read_dir(c.unwrap().path()).unwrap().count())
        .sum();
    run_ok(
        fer()
            .arg("report")
            .arg(&cv_run)
            .arg("--out")
            .arg(&report)
            .args(["--robustness-images", "40", "--other-data"])
            .arg(common::fer_dir())
            .args([
                "--class-map",
                "angry=anger,surprise=astonished,neutral=calm,disgust=distress,fear=distress,happy=joy,sad=sorrow",
            ]),
    );
    let md = std::fs::read_to_string(report.join("README.md")).unwrap();
    assert!(
        md.contains("### Across folds") && md.contains("**six** (3 folds)"),
        "{md}"
    );
    assert!(md.contains("| six fold 2 |"), "{md}");
    assert!(md.contains("### Across data sets"), "{md}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(report.join("summary.json")).unwrap()).unwrap();
    let across = summary["across"].as_array().unwrap();
    assert_eq!(
        across.len(),
        6,
        "three folds, each on its own and on FER-2013"
    );
    for (k, pair) in across.chunks(2).enumerate() {
        assert_eq!(pair[0]["model"], format!("six fold {}", k + 1));
        assert_eq!(pair[0]["own"], true);
        assert_eq!(pair[1]["own"], false);
        assert_eq!(pair[1]["images"].as_u64().unwrap() as usize, fer_n);
        assert!(pair[1]["class_map"]["dropped"]
            .as_array()
            .unwrap()
            .is_empty());
        let acc = &pair[1]["figures"]["accuracy"];
        let (v, lo, hi) = (
            acc["value"].as_f64().unwrap(),
            acc["lo"].as_f64().unwrap(),
            acc["hi"].as_f64().unwrap(),
        );
        assert!(lo <= v && v <= hi && hi - lo < 0.1, "{acc}");
    }
    assert!(
        md.contains(&format!(
            "| six fold 1 | `{}` | {fer_n} |",
            common::fer_dir().display()
        )),
        "{md}"
    );

    // A sweep that scores each trial by cross-validation: its value is the
    // mean of its folds' held-out accuracy, and its winner is a recipe to
    // train on all the data, not one fold's model.
    let exp = tmp.path().join("six-cv-sweep.yaml");
    std::fs::write(
        &exp,
        format!(
            "name: six-cvs\nseed: 1\ndata: {{dir: {}, val_fraction: 0.15}}\n\
             model: {{kind: cnn, widths: [8, 16], convs: 1}}\n\
             train: {{epochs: 1, batch_size: 32, optimizer: {{kind: adamw, lr: 0.003}}}}\n\
             search: {{sampler: {{kind: random}}, n_trials: 2, objective: {{metric: val/acc, direction: maximize}}}}\n\
             space:\n  train.optimizer.lr: {{float: [0.0003, 0.01], log: true}}\n\
             cv: {{folds: 3, group_by: '/(S\\d+)_'}}\n",
            data.display()
        ),
    )
    .unwrap();
    let sweep = tmp.path().join("runs/six-cvs");
    run_ok(fer().arg("sweep").arg(&exp).arg("--sweep-dir").arg(&sweep));
    let summary: Value =
        serde_json::from_slice(&std::fs::read(sweep.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["objective"], "cv/acc");
    assert!(summary["best_model"].is_null(), "{summary}");
    let trials = summary["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2);
    let mut values = Vec::new();
    for t in trials {
        assert_eq!(t["state"], "complete", "{t}");
        let n = t["number"].as_u64().unwrap();
        let dir = sweep.join(format!("trials/{n:03}"));
        // The mean of what each fold's model scored on its held-out fold.
        let accs: Vec<f64> = (1..=3)
            .map(|k| {
                let e: Value = serde_json::from_slice(
                    &std::fs::read(dir.join(format!("fold-{k}/eval.json"))).unwrap(),
                )
                .unwrap();
                e["test"]["overall"]["accuracy"].as_f64().unwrap()
            })
            .collect();
        let mean = accs.iter().sum::<f64>() / 3.0;
        let v = t["value"].as_f64().unwrap();
        assert!((v - mean).abs() < 1e-9, "trial {n}: {v} against {accs:?}");
        values.push((v, n));
    }
    let best = values
        .iter()
        .copied()
        .reduce(|a, b| if b.0 > a.0 { b } else { a })
        .unwrap()
        .1;
    assert_eq!(summary["best"].as_u64(), Some(best));
    let refit = fer::config::RunConfig::load(&sweep.join("best-config.yaml"), &[]).unwrap();
    assert!(
        refit.cv.is_none(),
        "the refit recipe trains on all the data"
    );
    let trial_cfg =
        fer::config::RunConfig::load(&sweep.join(format!("trials/{best:03}/config.yaml")), &[])
            .unwrap();
    assert_eq!(refit.train, trial_cfg.train, "the winner's recipe");
    let md = std::fs::read_to_string(sweep.join("summary.md")).unwrap();
    assert!(
        md.contains("Cross-validated") && md.contains("best-config.yaml"),
        "{md}"
    );
    // The report shows each trial's folds, each on its own held-out fold.
    let report = tmp.path().join("report-cvs");
    run_ok(
        fer()
            .arg("report")
            .arg(&sweep)
            .arg("--out")
            .arg(&report)
            .args(["--robustness-images", "40"]),
    );
    let md = std::fs::read_to_string(report.join("README.md")).unwrap();
    assert!(md.contains("trial 0 cnn fold 3"), "{md}");
    assert!(md.contains("cv/acc"), "{md}");
    // In full: the winner's folds, and its spread across them alone.
    let other = 1 - best;
    assert!(
        md.contains(&format!("**six-cvs-trial{best}** (3 folds)"))
            && !md.contains(&format!("**six-cvs-trial{other}**")),
        "{md}"
    );
}

#[test]
fn the_release_model_reads_another_data_set_through_a_class_map() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("six");
    // Test faces only: evaluation reads test/.
    let counts = write_six_class_set(&data, 0, 40);
    let n: usize = counts.iter().map(|c| c.1).sum();
    let model = common::repo().join("models/fer-release.safetensors");
    let map = "anger=angry,astonished=surprise,calm=neutral,distress=fear,joy=happy,sorrow=sad";
    let eval = |map: &str| {
        let out = run_ok(
            fer()
                .args(["eval", "--json", "--data"])
                .arg(&data)
                .arg(&model)
                .args(["--class-map", map]),
        );
        (
            json_of(&out),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ev, err) = eval(map);
    assert_eq!(ev["overall"]["n"].as_u64().unwrap() as usize, n);
    assert_eq!(ev["classes"][0], "angry", "scored in the model's classes");
    let cm = &ev["data"]["class_map"];
    assert_eq!(cm["kept"].as_u64().unwrap() as usize, n);
    assert!(cm["dropped"].as_array().unwrap().is_empty());
    assert!(
        err.contains("joy→happy") && err.contains("dropped none"),
        "{err}"
    );
    // Disgust faces count as fear here, so a few points go; the release
    // model still reads these converted faces far above chance (1/7).
    let acc = ev["overall"]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.45, "accuracy {acc} on the mapped set");

    // Dropping a class: counted, and the score is over the rest.
    let (ev, err) = eval(&map.replace("calm=neutral", "calm=-"));
    let calm = counts.iter().find(|c| c.0 == "calm").unwrap().1;
    assert_eq!(ev["overall"]["n"].as_u64().unwrap() as usize, n - calm);
    assert_eq!(
        ev["data"]["class_map"]["dropped"],
        serde_json::json!([["calm", calm]])
    );
    assert!(
        err.contains(&format!("dropped calm ({calm} images)")),
        "{err}"
    );

    // Without a map the other classes are refused, naming them.
    let out = fer()
        .args(["eval", "--data"])
        .arg(&data)
        .arg(&model)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("unknown class folder") && err.contains("--class-map"),
        "{err}"
    );
    // A map naming a class the data set lacks.
    let out = fer()
        .args(["eval", "--data"])
        .arg(&data)
        .arg(&model)
        .args(["--class-map", "glee=happy"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'glee' is not a class of the data set"),
        "{err}"
    );
}
