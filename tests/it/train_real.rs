//! Training end to end on real FER-2013 subsets: a smoke run whose loss goes
//! down, resume after `kill -9` matching an uninterrupted run (in fp32, and in
//! bf16 with channels_last), the model file round trip through `fer eval`,
//! and ImageNet weights from torchvision.

use crate::common;

use fer::artifact::{self, Classifier};
use fer::config::RunConfig;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn tiny_yaml(epochs: usize) -> String {
    tiny_yaml_with(epochs, "")
}

/// The tiny run config with extra `train` keys (`, key: value` pairs).
fn tiny_yaml_with(epochs: usize, train_extra: &str) -> String {
    format!(
        "name: tiny\nseed: 3\n\
         data: {{dir: {dir}}}\n\
         model: {{kind: cnn, widths: [8, 16, 32], convs: 1, dropout: 0.2}}\n\
         train: {{epochs: {epochs}, batch_size: 32, subset: 0.04, threads: 2,\n\
           optimizer: {{kind: sgd, lr: 0.05}}, schedule: {{kind: onecycle}}{train_extra}}}\n",
        dir = common::fer_dir().display()
    )
}

fn write_cfg(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("tiny.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn fer() -> Command {
    let mut c = common::fer_bin();
    c.env("FER_THREADS", "2");
    c
}

#[test]
fn smoke_train_loss_goes_down_and_files_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RunConfig::load(&write_cfg(tmp.path(), &tiny_yaml(3)), &[]).unwrap();
    let run = tmp.path().join("run");
    let out = fer::train::run(&cfg, &run, false).unwrap();
    let rd = fer::layout::RunDir(run.clone());
    let hist: Vec<fer::metric::EpochRecord> = std::fs::read_to_string(rd.metrics_jsonl())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hist.len(), 3);
    assert!(hist[2].train_loss < hist[0].train_loss, "{hist:?}");
    assert!(hist[2].val_loss < hist[0].val_loss, "{hist:?}");
    // Better than always answering "happy" (722 of 2873 val images).
    assert!(
        out.val.overall.accuracy > 722.0 / 2873.0,
        "val acc {}",
        out.val.overall.accuracy
    );
    for f in [
        rd.config(),
        rd.metrics_csv(),
        rd.last(),
        rd.best(),
        rd.model(),
        rd.eval(),
    ] {
        assert!(f.exists(), "{} missing", f.display());
    }
    // The resolved config is written first and parses back to the same config.
    let back: RunConfig = fer::config::load_yaml(&rd.config()).unwrap();
    assert_eq!(back, cfg);
}

fn model_tensors(path: &Path) -> std::collections::BTreeMap<String, tch::Tensor> {
    fer::tensor_io::load(path).unwrap().tensors
}

#[test]
fn resume_after_kill_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    resume_after_kill_matches(tmp.path(), &tiny_yaml(4), 4, 1);
}

/// Weight averaging (`train.swa`): a run killed between two averaging
/// epochs resumes to the same average, and the model file holds exactly
/// the weights the trainer says it chose (the average or the best epoch).
#[test]
fn weight_averaging_resumes_exactly_and_ships_what_it_chose() {
    let tmp = tempfile::tempdir().unwrap();
    let model = resume_after_kill_matches(
        tmp.path(),
        &tiny_yaml_with(2, ", swa: {epochs: 2, lr: 0.01}"),
        4,
        3,
    );
    let dir = model.parent().unwrap();
    let out = fer::train::Outcome::read(dir).unwrap();
    let swa = out.swa.clone().expect("eval.json records the average");
    assert_eq!((swa.snapshots, out.epochs_run), (2, 4));
    assert!(swa.bn_batches > 0);
    let rd = fer::layout::RunDir(dir.to_path_buf());
    let best = out.history[out.best_epoch.unwrap() - 1].val_acc;
    assert_eq!(swa.chosen, swa.val_acc > best, "{swa:?} against {best}");
    let shipped = model_tensors(&model);
    let source = model_tensors(&if swa.chosen { rd.swa() } else { rd.best() });
    // Every network tensor (the file also holds the class prior).
    let mut compared = 0;
    for (k, t) in &shipped {
        if let Some(src) = source.get(&format!("model/{k}")) {
            let d = (t - src).abs().max().double_value(&[]);
            assert!(d == 0.0, "{k} differs from its source by {d}");
            compared += 1;
        }
    }
    let in_source = source.keys().filter(|k| k.starts_with("model/")).count();
    assert_eq!(compared, in_source, "model file lacks network tensors");
    // The resumed run's average is the uninterrupted run's, chosen or not.
    let straight = model_tensors(&tmp.path().join("a/checkpoints/swa.safetensors"));
    let resumed = model_tensors(&rd.swa());
    for (k, t) in straight.iter().filter(|(k, _)| k.starts_with("model/")) {
        let d = (t - &resumed[k]).abs().max().double_value(&[]);
        assert!(d == 0.0, "average {k} differs after the resume by {d}");
    }
    // The average is not any one epoch's weights, and its BatchNorm
    // statistics were recomputed rather than averaged.
    let (avg, last) = (model_tensors(&rd.swa()), model_tensors(&rd.last()));
    let moved = |k: &str| (&avg[k] - &last[k]).abs().max().double_value(&[]);
    let conv = avg
        .keys()
        .find(|k| k.ends_with(".weight") && avg[*k].dim() == 4)
        .unwrap();
    assert!(moved(conv) > 0.0, "{conv} equals the last epoch's");
    let rm = avg.keys().find(|k| k.ends_with("running_mean")).unwrap();
    let swa_rm = &last[&rm.replace("model/", "swa/")];
    let d = (&avg[rm] - swa_rm).abs().max().double_value(&[]);
    assert!(d > 0.0, "{rm} is the plain average, not recomputed");
}

/// Logit adjustment (`eval.logit_adjust`): fitted on validation after
/// training, stored in the model file and applied by everything that loads
/// it; `fer calibrate` fits the same alpha from the raw scores of a file that
/// already holds one.
#[test]
fn logit_adjustment_is_fitted_on_validation_and_travels_with_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    // Balanced class weights make the network lean hard towards rare classes.
    let yaml = tiny_yaml_with(1, ", class_weight_power: 1.0") + "eval: {logit_adjust: {}}\n";
    let cfg = RunConfig::load(&write_cfg(tmp.path(), &yaml), &[]).unwrap();
    let run = tmp.path().join("run");
    let out = fer::train::run(&cfg, &run, false).unwrap();
    let rec = out.logit_adjust.clone().expect("eval.json records the fit");
    assert_eq!(rec.grid.len(), 31);
    assert!(rec.alpha > 0.0, "{}", rec.summary());
    assert!(
        rec.after.accuracy > rec.before.accuracy,
        "{}",
        rec.summary()
    );
    common::assert_same_fraction(out.val.overall.accuracy, rec.after.accuracy, "val accuracy");
    assert_eq!(
        rec.unadjusted_correct,
        (rec.before.accuracy * 2873.0).round() as usize
    );

    // The file applies alpha * ln(prior) to every prediction.
    let clf = Classifier::load(&run, tch::Device::Cpu).unwrap();
    let adj = clf
        .meta
        .logit_adjust
        .clone()
        .expect("the model file holds it");
    assert_eq!(adj.alpha, rec.alpha);
    for (b, p) in adj.bias.iter().zip(&clf.meta.prior) {
        assert!((b - rec.alpha as f32 * p.ln()).abs() < 1e-5);
    }
    let data = fer::data::load(&cfg.data, &fer::layout::cache_dir())
        .unwrap()
        .data;
    let raw = clf.predict_set_raw(&data.test, false, 256).unwrap();
    let adjusted = clf.predict_set(&data.test, false, 256).unwrap();
    assert_ne!(raw, adjusted);
    let mut by_hand = raw.clone();
    adj.apply(&mut by_hand);
    assert_eq!(by_hand, adjusted);
    let m = fer::eval::metrics::compute(&adjusted, &data.test.labels, 7);
    common::assert_same_fraction(m.accuracy, out.test.overall.accuracy, "test accuracy");
    // The live path (one batch of tensors) agrees with the batch path.
    let pre = &clf.meta.preprocess;
    let mut buf = vec![0f32; 3 * pre.out_len()];
    fer::data::augment::eval_batch(&data.test.pixels, &[0, 1, 2], pre, &mut buf);
    let s = pre.size as i64;
    let live = clf.probs(&tch::Tensor::from_slice(&buf).view([3, 1, s, s]));
    for i in 0..3 {
        for c in 0..7 {
            let d = live.double_value(&[i, c]) - adjusted[i as usize * 7 + c as usize] as f64;
            assert!(d.abs() < 1e-5, "image {i} class {c}: {d}");
        }
    }

    // fer calibrate refits from the raw scores: the same alpha, not a second
    // adjustment on top of the first; an existing --out is refused.
    let cal = tmp.path().join("cal.safetensors");
    let st = common::run_ok(
        fer()
            .arg("calibrate")
            .arg(&run)
            .arg("--out")
            .arg(&cal)
            .args(["--json", "--data"])
            .arg(common::fer_dir()),
    );
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["alpha"].as_f64().unwrap(), rec.alpha);
    assert_eq!(
        v["crossfit_correct"].as_u64().unwrap() as usize,
        rec.crossfit_correct
    );
    let st = fer()
        .arg("calibrate")
        .arg(&run)
        .arg("--out")
        .arg(&cal)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        !st.status.success() && err.contains("cal.safetensors") && err.contains("exists"),
        "{err}"
    );
    let st = fer()
        .arg("calibrate")
        .arg(&run)
        .args(["--step", "0", "--out"])
        .arg(tmp.path().join("other.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(!st.status.success() && err.contains("--step"), "{err}");

    // A bad grid in a config names the file and the field.
    let bad = tiny_yaml(1) + "eval: {logit_adjust: {step: -0.1}}\n";
    let err = format!(
        "{:#}",
        RunConfig::load(&write_cfg(tmp.path(), &bad), &[]).unwrap_err()
    );
    assert!(
        err.contains("tiny.yaml") && err.contains("eval.logit_adjust.step"),
        "{err}"
    );
}

/// A refit (`data.val_fraction: 0`, `train.select: last`): every training
/// image is trained on, the last epoch ships, nothing claims a validation
/// score, and configs that would read the missing split are refused.
#[test]
fn a_refit_trains_on_all_of_train_and_ships_its_last_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = tiny_yaml_with(2, ", select: last")
        .replace("data: {dir:", "data: {val_fraction: 0, dir:")
        + "eval: {tta: true}\n";
    let cfg = RunConfig::load(&write_cfg(tmp.path(), &yaml), &[]).unwrap();
    let run = tmp.path().join("run");
    let out = fer::train::run(&cfg, &run, false).unwrap();
    assert_eq!((out.val.overall.n, out.test.overall.n), (0, 3589));
    assert_eq!(out.best_epoch, Some(2));
    assert!(
        out.weights_clause().contains("refit"),
        "{}",
        out.weights_clause()
    );
    // 4% of all 28,709 training images (1,149) in full batches of 32 is
    // 1,120 an epoch; with the default 10% validation split it would be
    // 4% of 25,836 (1,033), so 1,024.
    let per_epoch = (out.train_seconds * out.train_img_per_s / 2.0).round();
    assert_eq!(per_epoch, 1120.0);
    // The model file is the last epoch's weights.
    let rd = fer::layout::RunDir(run.clone());
    let shipped = model_tensors(&rd.model());
    let last = model_tensors(&rd.last());
    let mut compared = 0;
    for (k, t) in &shipped {
        if let Some(src) = last.get(&format!("model/{k}")) {
            assert!(t.equal(src), "{k} differs from the last epoch's");
            compared += 1;
        }
    }
    assert!(compared > 0);
    let meta = fer::artifact::ModelMeta::read(&rd.model()).unwrap();
    assert_eq!((meta.val_fraction, meta.val_accuracy), (0.0, None));
    let st = fer()
        .args(["eval", "--split", "val", "--data"])
        .arg(common::fer_dir())
        .arg(&run)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        !st.status.success() && err.contains("no validation split"),
        "{err}"
    );
    // Whatever would read validation is refused, naming the field.
    for (extra, field) in [
        ("", "train.select"),
        (
            ", select: last, early_stopping: {patience: 2, min_delta: 0.0}",
            "train.early_stopping",
        ),
    ] {
        let bad = tiny_yaml_with(1, extra).replace("data: {dir:", "data: {val_fraction: 0, dir:");
        let err = format!(
            "{:#}",
            RunConfig::load(&write_cfg(tmp.path(), &bad), &[]).unwrap_err()
        );
        assert!(
            err.contains("tiny.yaml") && err.contains("val_fraction is 0") && err.contains(field),
            "{err}"
        );
    }
}

/// Mixed precision and NHWC weights survive a checkpoint round trip too:
/// the resumed run is bit-identical, and files hold float32 tensors.
#[test]
fn bf16_channels_last_run_resumes_exactly_and_saves_fp32() {
    let tmp = tempfile::tempdir().unwrap();
    let model = resume_after_kill_matches(
        tmp.path(),
        &tiny_yaml_with(4, ", precision: bf16, channels_last: true"),
        4,
        1,
    );
    for (k, t) in model_tensors(&model) {
        assert!(
            matches!(t.kind(), tch::Kind::Float | tch::Kind::Int64),
            "{k} is {:?}",
            t.kind()
        );
    }
    let out = fer::train::Outcome::read(model.parent().unwrap()).unwrap();
    let acc = out.val.overall.accuracy;
    // Better than always answering "happy" (722 of 2873 val images).
    assert!(acc > 722.0 / 2873.0, "val acc {acc}");
}

/// Webcam corruptions as augmentation, with `val/robust_acc` measured each
/// epoch: a run killed after its first epoch resumes bit-identical, and
/// every epoch records a corrupted-validation accuracy below certainty.
#[test]
fn corrupted_training_resumes_exactly_and_logs_robust_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = tiny_yaml_with(3, ", robust_val: true").replace(
        "data: {dir: ",
        "data: {augment: {corrupt: {\
           mask: {p: 0.2, range: [0.3, 0.5]}, sunglasses: {p: 0.2, range: [6, 12]},\
           patch: {p: 0.2, range: [8, 16]}, low_light: {p: 0.3, range: [0.2, 0.8]},\
           downscale: {p: 0.3, range: [14, 36]}, blur: {p: 0.3, range: [0.3, 2.0]},\
           motion_blur: {p: 0.3, range: [2, 9]}, noise: {p: 0.3, range: [2, 36]},\
           shot_noise: {p: 0.3, range: [4, 32]}, jpeg: {p: 0.3, range: [8, 60]}}}, dir: ",
    );
    let model = resume_after_kill_matches(tmp.path(), &yaml, 3, 1);
    let run = model.parent().unwrap();
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    for l in text.lines() {
        let r: fer::metric::EpochRecord = serde_json::from_str(l).unwrap();
        let robust = r.val_robust_acc.expect("val/robust_acc every epoch");
        assert!((0.0..1.0).contains(&robust), "{l}");
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(
        csv.lines().next().unwrap().contains(",val_robust_acc,"),
        "{csv}"
    );
}

/// Trains `yaml` (`epochs` in all) straight through and again with a
/// `kill -9` once `kill_after` epochs are checkpointed and a resume, in
/// `tmp`; both must end identical. Returns the resumed run's model file.
fn resume_after_kill_matches(tmp: &Path, yaml: &str, epochs: usize, kill_after: usize) -> PathBuf {
    let cfg = write_cfg(tmp, yaml);
    let (a, b) = (tmp.join("a"), tmp.join("b"));

    common::run_ok(fer().args(["train"]).arg(&cfg).arg("--run-dir").arg(&a));

    // Start b, kill -9 it once `kill_after` epochs are checkpointed.
    let mut child = fer()
        .args(["train"])
        .arg(&cfg)
        .arg("--run-dir")
        .arg(&b)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let metrics = b.join("metrics.jsonl");
    let t = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&metrics)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if lines >= kill_after {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "epoch {kill_after} never finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "run finished before it could be killed"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_at_kill = std::fs::read_to_string(&metrics).unwrap().lines().count();
    assert!(done_at_kill < epochs, "killed too late to test anything");

    common::run_ok(fer().args(["train", "--resume"]).arg(&b));

    let (ta, tb) = (
        model_tensors(&a.join("model.safetensors")),
        model_tensors(&b.join("model.safetensors")),
    );
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, x) in &ta {
        let d = (x - &tb[k]).abs().max().double_value(&[]);
        assert!(d == 0.0, "{k} differs by {d}");
    }
    let hist = |d: &Path| -> Vec<(f64, f64, f64, Option<f64>)> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let r: fer::metric::EpochRecord = serde_json::from_str(l).unwrap();
                (r.train_loss, r.val_loss, r.val_acc, r.val_robust_acc)
            })
            .collect()
    };
    assert_eq!(hist(&a), hist(&b));
    assert_eq!(hist(&b).len(), epochs, "no epoch lost or counted twice");
    b.join("model.safetensors")
}

#[test]
fn model_file_round_trip_gives_identical_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RunConfig::load(
        &write_cfg(tmp.path(), &tiny_yaml(1)),
        &["train.subset=0.02".into()],
    )
    .unwrap();
    let run = tmp.path().join("run");
    let out = fer::train::run(&cfg, &run, false).unwrap();

    // Same file loaded twice predicts identically, and matches eval.json.
    let clf = Classifier::load(&run, tch::Device::Cpu).unwrap();
    let data = fer::data::load(&cfg.data, &fer::layout::cache_dir())
        .unwrap()
        .data;
    let p1 = clf.predict_set(&data.test, false, 100).unwrap();
    let p2 = Classifier::load(&run.join("model.safetensors"), tch::Device::Cpu)
        .unwrap()
        .predict_set(&data.test, false, 333)
        .unwrap();
    assert_eq!(p1, p2);
    let m = fer::eval::metrics::compute(&p1, &data.test.labels, 7);
    common::assert_same_fraction(m.accuracy, out.test.overall.accuracy, "test accuracy");

    // Re-saving and loading again keeps every prediction.
    let copy = tmp.path().join("copy.safetensors");
    artifact::save(&copy, &clf.meta, clf.vs.as_ref()).unwrap();
    let p3 = Classifier::load(&copy, tch::Device::Cpu)
        .unwrap()
        .predict_set(&data.test, false, 256)
        .unwrap();
    assert_eq!(p1, p3);

    // `fer eval FILE --json` reports the same accuracy, per half too.
    let st = common::run_ok(
        fer()
            .args(["eval"])
            .arg(&copy)
            .args(["--json", "--data"])
            .arg(common::fer_dir()),
    );
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    common::assert_same_fraction(
        v["overall"]["accuracy"].as_f64().unwrap(),
        m.accuracy,
        "fer eval --json",
    );
    assert_eq!(v["by_origin"]["PublicTest"]["n"].as_u64().unwrap(), 3589);
}

/// Nothing finished is overwritten: a new run or sweep aimed at a folder
/// that holds one, or a resume of the wrong kind, is refused with the folder
/// named and what to do, and the finished files stay as they were.
#[test]
fn a_finished_run_or_sweep_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, sweep) = (tmp.path().join("run"), tmp.path().join("sweep"));
    let tiny = ["--set", "train.subset=0.02", "--set", "train.epochs=1"];
    common::run_ok(
        common::fer()
            .args(["train", "configs/mlp.yaml", "--run-dir"])
            .arg(&run)
            .args(tiny),
    );
    common::run_ok(
        common::fer()
            .args(["sweep", "experiments/smoke.yaml", "--sweep-dir"])
            .arg(&sweep)
            .args(["--set", "search.n_trials=1"]),
    );
    let files = |d: &Path| -> Vec<Vec<u8>> {
        [
            "config.yaml",
            "model.safetensors",
            "metrics.jsonl",
            "eval.json",
        ]
        .iter()
        .filter_map(|f| std::fs::read(d.join(f)).ok())
        .collect()
    };
    let (run_before, sweep_before) = (files(&run), files(&sweep));
    assert_eq!(run_before.len(), 4);

    let refused = |args: &[&std::ffi::OsStr], expect: &str| {
        let out = common::fer().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let (r, w) = (run.as_os_str(), sweep.as_os_str());
    // A new run onto a finished run, or onto a sweep.
    refused(
        &[os("train"), os("configs/cnn.yaml"), os("--run-dir"), r],
        "already holds a run; pass --resume to continue it, or choose another --run-dir",
    );
    refused(
        &[os("train"), os("configs/cnn.yaml"), os("--run-dir"), w],
        "holds a sweep, not a run; choose another --run-dir",
    );
    // A new sweep onto a run, or onto a finished sweep; a resume of a run as
    // a sweep and of a sweep as a run.
    refused(
        &[
            os("sweep"),
            os("experiments/smoke.yaml"),
            os("--sweep-dir"),
            r,
        ],
        "holds a run, not a sweep; choose another --sweep-dir",
    );
    refused(
        &[
            os("sweep"),
            os("experiments/smoke.yaml"),
            os("--sweep-dir"),
            w,
        ],
        "already holds a sweep; pass --resume",
    );
    refused(
        &[
            os("sweep"),
            os("experiments/smoke.yaml"),
            os("--resume"),
            os("--sweep-dir"),
            r,
        ],
        "holds a run, not a sweep",
    );
    refused(
        &[os("train"), os("--resume"), w],
        "holds a sweep, not a run",
    );
    // A folder with other files in it is no place for a new run either.
    refused(
        &[
            os("train"),
            os("configs/cnn.yaml"),
            os("--run-dir"),
            tmp.path().as_os_str(),
        ],
        "is not empty and holds no fer run",
    );
    // Nor are other commands' outputs written over a run, a sweep, a
    // folder of other files, or the files a command reads.
    let model = run.join("model.safetensors");
    let m = model.as_os_str();
    refused(
        &[os("report"), r, os("--out"), w],
        "holds a sweep; choose another --out for the report",
    );
    refused(
        &[os("report"), r, os("--out"), tmp.path().as_os_str()],
        "is not empty and holds no fer report",
    );
    refused(
        &[os("data"), os("stats"), os("--plot"), m],
        "exists already; choose another --plot, or pass --replace",
    );
    refused(
        &[os("calibrate"), r, os("--replace"), os("--out"), m],
        "is a file this command reads; choose another --out",
    );
    refused(
        &[os("ensemble"), r, r, os("--replace"), os("--out"), m],
        "is a file this command reads; choose another --out",
    );
    assert!(files(&run) == run_before, "the run's files changed");
    assert!(files(&sweep) == sweep_before, "the sweep's files changed");
}

#[test]
fn a_bad_run_config_is_rejected_with_its_location() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_cfg(tmp.path(), "name: x\nmodel: {kind: transformer}\n");
    let err = format!("{:#}", RunConfig::load(&p, &[]).unwrap_err());
    assert!(
        err.contains("tiny.yaml:2:") && err.contains("resnet18"),
        "{err}"
    );
    let p = write_cfg(tmp.path(), &tiny_yaml(1));
    let err = format!(
        "{:#}",
        RunConfig::load(&p, &["train.epochz=3".into()]).unwrap_err()
    );
    assert!(err.contains("epochz") && err.contains("epochs"), "{err}");
    let err = format!(
        "{:#}",
        RunConfig::load(&p, &["train.epochs=many".into()]).unwrap_err()
    );
    assert!(err.contains("train.epochs=many"), "{err}");
    let p = write_cfg(
        tmp.path(),
        &tiny_yaml_with(1, ", swa: {epochs: 0, lr: 0.01}"),
    );
    let err = format!("{:#}", RunConfig::load(&p, &[]).unwrap_err());
    assert!(
        err.contains("tiny.yaml") && err.contains("train.swa.epochs must be at least 1"),
        "{err}"
    );
    let p = write_cfg(
        tmp.path(),
        &tiny_yaml_with(1, ", swa: {epochs: 2, rate: 0.01}"),
    );
    let err = format!("{:#}", RunConfig::load(&p, &[]).unwrap_err());
    assert!(err.contains("rate") && err.contains("lr"), "{err}");
}

#[test]
fn imagenet_weights_from_torchvision_load_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("resnet18.safetensors");
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script = "import sys, torch, torchvision; from safetensors.torch import save_file\n\
                  torch.manual_seed(0); m = torchvision.models.resnet18(weights=None)\n\
                  save_file({k: v.contiguous() for k, v in m.state_dict().items()}, sys.argv[1])";
    common::run_ok(Command::new(&py).args(["-c", script]).arg(&file));

    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let cfg = fer::models::ModelConfig::Resnet18(Default::default());
    fer::models::build(&vs.root(), &cfg, 48, 7).unwrap();
    let rep = fer::models::resnet::load_pretrained(&vs, &file).unwrap();
    assert_eq!(rep.averaged, vec!["conv1.weight".to_string()]);
    assert_eq!(rep.skipped.len(), 2, "{:?}", rep.skipped); // fc.weight, fc.bias
                                                           // Every other tensor of the network (weights and BN statistics) loaded.
    assert_eq!(rep.loaded.len(), vs.variables().len() - 3);
    let src: std::collections::BTreeMap<String, tch::Tensor> = tch::Tensor::read_safetensors(&file)
        .unwrap()
        .into_iter()
        .collect();
    let vars = vs.variables();
    assert!(vars["layer3.1.conv2.weight"].equal(&src["layer3.1.conv2.weight"]));
    assert!(vars["layer1.0.bn1.running_var"].equal(&src["layer1.0.bn1.running_var"]));
    let avg = src["conv1.weight"].mean_dim([1i64].as_slice(), true, tch::Kind::Float);
    assert!(vars["conv1.weight"].allclose(&avg, 1e-6, 1e-7, false));
    assert_eq!(vars["fc.weight"].size(), vec![7, 512]);

    // A 3x3 stem cannot take the 7x7 filters: skipped, not an error.
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let small = fer::models::resnet::ResnetConfig {
        stem: fer::models::resnet::Stem::Small,
        ..Default::default()
    };
    fer::models::build(
        &vs.root(),
        &fer::models::ModelConfig::Resnet18(small),
        48,
        7,
    )
    .unwrap();
    let rep = fer::models::resnet::load_pretrained(&vs, &file).unwrap();
    assert!(
        rep.skipped.iter().any(|s| s.starts_with("conv1.weight")),
        "{:?}",
        rep.skipped
    );
}

#[test]
fn a_diverging_run_fails_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tiny_yaml(2).replace(
        "optimizer: {kind: sgd, lr: 0.05}, schedule: {kind: onecycle}",
        "optimizer: {kind: sgd, lr: 1.0e12}, schedule: {kind: constant}",
    );
    assert!(text.contains("1.0e12"));
    let cfg = write_cfg(tmp.path(), &text);
    let st = fer()
        .args(["train"])
        .arg(&cfg)
        .arg("--run-dir")
        .arg(tmp.path().join("r"))
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(2));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(
        err.contains("training diverged") && err.contains("clip_grad_norm"),
        "{err}"
    );
    // The resolved config was written before the failure.
    assert!(tmp.path().join("r/config.yaml").exists());
}

#[test]
fn freeze_then_unfreeze_trains_only_the_head_first() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RunConfig::load(
        &write_cfg(tmp.path(), &tiny_yaml(1)),
        &[
            "train.freeze_backbone_epochs=1".into(),
            "train.subset=0.01".into(),
        ],
    )
    .unwrap();
    // Initial weights: the same seed builds the same network.
    tch::manual_seed(cfg.seed as i64);
    let vs0 = tch::nn::VarStore::new(tch::Device::Cpu);
    fer::models::build(&vs0.root(), &cfg.model, cfg.data.augment.size, 7).unwrap();
    let run = tmp.path().join("run");
    fer::train::run(&cfg, &run, false).unwrap();
    let after = fer::tensor_io::load(&run.join("model.safetensors"))
        .unwrap()
        .tensors;
    let before = vs0.variables();
    let changed = |k: &str| !before[k].equal(&after[k]);
    assert!(
        changed("head.weight"),
        "the head trains while the backbone is frozen"
    );
    assert!(
        !changed("features.0.conv0.weight"),
        "frozen conv weights must not move"
    );
    assert!(
        !changed("features.2.bn0.weight"),
        "frozen BN affine weights must not move"
    );
}

/// Test-set probabilities of a two-member ensemble and of each member, and
/// the largest gap between the ensemble's and the members' average.
fn gap_to_average(
    ens: &Classifier,
    a: &Classifier,
    b: &Classifier,
    set: &fer::data::ImageSet,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, f32) {
    let [pe, pa, pb] = [ens, a, b].map(|c| c.predict_set(set, false, 256).unwrap());
    let worst = pe
        .iter()
        .zip(pa.iter().zip(&pb))
        .map(|(e, (a, b))| (e - (a + b) / 2.0).abs())
        .fold(0f32, f32::max);
    (pe, pa, pb, worst)
}

#[test]
fn a_mixed_ensemble_trains_each_member_with_its_overrides_and_stores_f16() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_cfg(
        tmp.path(),
        &format!(
            "{}ensemble:\n  members:\n    - {{seed: 3}}\n    - {{seed: 3, set: {{model.widths: [4, 8, 16], train.epochs: 2}}}}\n  weights: f16\n",
            tiny_yaml(1)
        ),
    );
    let cfg = RunConfig::load(&path, &["train.subset=0.02".into()]).unwrap();
    let run = tmp.path().join("run");
    let out = fer::train::run(&cfg, &run, false).unwrap();

    // Member k trains into member-<k>/ with its own overrides applied.
    let a = Classifier::load(&run.join("member-0"), tch::Device::Cpu).unwrap();
    let b = Classifier::load(&run.join("member-1"), tch::Device::Cpu).unwrap();
    let widths = |c: &Classifier| match &c.meta.model {
        fer::models::ModelConfig::Cnn(n) => n.widths.clone(),
        m => panic!("member is a {}", m.family()),
    };
    assert_eq!((widths(&a), widths(&b)), (vec![8, 16, 32], vec![4, 8, 16]));
    assert_eq!(out.epochs_run, 1 + 2);

    // The shipped file holds every weight as float16, and is the average of
    // the members with their weights rounded to float16.
    let file = fer::tensor_io::load(&run.join("model.safetensors")).unwrap();
    let weights: Vec<_> = file.tensors.iter().filter(|(k, _)| *k != "prior").collect();
    assert!(weights.len() > 4);
    for (k, t) in &weights {
        assert_eq!(t.kind(), tch::Kind::Half, "{k} is stored as {:?}", t.kind());
    }
    let ens = Classifier::load(&run, tch::Device::Cpu).unwrap();
    assert_eq!(ens.meta.params, a.meta.params + b.meta.params);
    let data = fer::data::load(&cfg.data, &fer::layout::cache_dir())
        .unwrap()
        .data;
    let (pe, _, _, worst) = gap_to_average(&ens, &a, &b, &data.test);
    assert!(
        worst > 0.0 && worst < 2e-2,
        "float16 storage moved probabilities by {worst}"
    );
    // eval.json measures the stored file, not the float32 members.
    let m = fer::eval::metrics::compute(&pe, &data.test.labels, 7);
    common::assert_same_fraction(m.accuracy, out.test.overall.accuracy, "test accuracy");

    // A member override outside model. and train. is refused by name.
    let err = RunConfig::load(
        &path,
        &["ensemble.members=[{seed: 1, set: {data.val_fraction: 0.2}}, {seed: 2}]".into()],
    )
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("ensemble.members[0].set") && err.contains("data.val_fraction"),
        "{err}"
    );
}

#[test]
fn a_seed_ensemble_trains_its_members_and_ships_their_average() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_cfg(
        tmp.path(),
        &format!("{}ensemble: {{seeds: [3, 4]}}\n", tiny_yaml(1)),
    );
    let run = tmp.path().join("run");
    // `fer train` of this config into `run`, plus `extra` arguments.
    let train = |extra: &[&str]| {
        let mut c = fer();
        c.arg("train")
            .arg(&path)
            .arg("--run-dir")
            .arg(&run)
            .args(["--set", "train.subset=0.02"])
            .args(extra);
        c
    };
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let said = stderr(&common::run_ok(&mut train(&[])));
    assert!(said.contains("ensemble member 2/2 (seed 4)"), "{said}");

    // The shipped file averages the members' probabilities.
    let ens = Classifier::load(&run, tch::Device::Cpu).unwrap();
    assert_eq!(ens.meta.model.family(), "ensemble");
    let a = Classifier::load(&run.join("member-3"), tch::Device::Cpu).unwrap();
    let b = Classifier::load(&run.join("member-4"), tch::Device::Cpu).unwrap();
    assert_eq!(ens.meta.params, a.meta.params + b.meta.params);
    let cfg = RunConfig::load(&path, &[]).unwrap();
    let data = fer::data::load(&cfg.data, &fer::layout::cache_dir())
        .unwrap()
        .data;
    let (pe, pa, pb, worst) = gap_to_average(&ens, &a, &b, &data.test);
    assert!(worst < 1e-5, "max deviation from the average {worst}");
    assert_ne!(pa, pb, "two seeds gave the same member");
    let out: fer::train::Outcome =
        serde_json::from_slice(&std::fs::read(run.join("eval.json")).unwrap()).unwrap();
    let m = fer::eval::metrics::compute(&pe, &data.test.labels, 7);
    common::assert_same_fraction(m.accuracy, out.test.overall.accuracy, "test accuracy");
    assert_eq!(out.epochs_run, 2);

    // The report shows each member alone beside the ensemble.
    let rep = tmp.path().join("report");
    common::run_ok(
        fer()
            .arg("report")
            .arg(&run)
            .arg("--out")
            .arg(&rep)
            .args(["--robustness-images", "60"]),
    );
    let md = std::fs::read_to_string(rep.join("README.md")).unwrap();
    assert!(
        md.contains("Seed ensemble: the softmax of 2 members"),
        "{md}"
    );
    let a_out: fer::train::Outcome =
        serde_json::from_slice(&std::fs::read(run.join("member-3/eval.json")).unwrap()).unwrap();
    assert!(
        md.contains(&format!("| 0 | 3 | 1 | 1 | {:.0} s |", a_out.train_seconds)),
        "{md}"
    );
    assert!(rep.join("tiny-member-4-curves.png").exists());

    // `fer ensemble` averages files trained apart: the two members make the
    // ensemble `fer train` wrote, and an ensemble's members join one by one.
    let ensemble = |sources: &[&Path], out: &Path, extra: &[&str]| {
        let mut c = fer();
        c.arg("ensemble")
            .args(sources)
            .arg("--out")
            .arg(out)
            .args(extra);
        c
    };
    let (m3, m4) = (run.join("member-3"), run.join("member-4"));
    let pair = tmp.path().join("pair.safetensors");
    let said = common::run_ok(&mut ensemble(&[&m3, &m4], &pair, &[]));
    let said = String::from_utf8_lossy(&said.stdout);
    let p = Classifier::load(&pair, tch::Device::Cpu).unwrap();
    assert_eq!(p.meta.val_accuracy, ens.meta.val_accuracy);
    assert!(
        said.contains(&format!(
            "ensemble val acc {:.4}",
            p.meta.val_accuracy.unwrap()
        )),
        "{said}"
    );
    let pp = p.predict_set(&data.test, false, 256).unwrap();
    let gap = common::max_gap(&pp, &pe);
    assert!(gap < 1e-6, "fer ensemble and fer train differ by {gap}");
    let trio = tmp.path().join("trio.safetensors");
    common::run_ok(&mut ensemble(&[&run, &m3], &trio, &["--weights", "f16"]));
    let t = Classifier::load(&trio, tch::Device::Cpu).unwrap();
    match &t.meta.model {
        fer::models::ModelConfig::Ensemble(e) => assert_eq!(e.members.len(), 3),
        m => panic!("a {}", m.family()),
    }
    assert_eq!(t.meta.params, 2 * a.meta.params + b.meta.params);

    // A model selected on another validation split is refused by name, and
    // an existing file is never overwritten.
    let other = tmp.path().join("other");
    common::run_ok(
        fer()
            .arg("train")
            .arg(&path)
            .arg("--run-dir")
            .arg(&other)
            .args(["--set", "train.subset=0.02", "--set", "ensemble=null"])
            .args(["--set", "data.val_fraction=0.2"]),
    );
    let bad = tmp.path().join("bad.safetensors");
    let st = ensemble(&[&m3, &other], &bad, &[]).output().unwrap();
    let err = stderr(&st);
    assert!(!st.status.success() && !bad.exists(), "{err}");
    assert!(
        err.contains("validation split") && err.contains("member-3") && err.contains("other"),
        "{err}"
    );
    let before = std::fs::read(&pair).unwrap();
    let st = ensemble(&[&m3, &m4], &pair, &[]).output().unwrap();
    assert!(!st.status.success() && stderr(&st).contains("exists already"));
    assert_eq!(std::fs::read(&pair).unwrap(), before);

    // Training again reuses the finished members; one trained with another
    // recipe is refused rather than silently mixed in.
    let said = stderr(&common::run_ok(&mut train(&[])));
    assert!(
        said.contains("finished in") && said.contains("reused"),
        "{said}"
    );
    let st = train(&["--set", "model.dropout=0.3"]).output().unwrap();
    let err = stderr(&st);
    assert!(!st.status.success());
    assert!(
        err.contains("member-3") && err.contains("different config"),
        "{err}"
    );

    // The config is checked: one seed is not an ensemble.
    let st = train(&["--set", "ensemble.seeds=[3]"]).output().unwrap();
    let err = stderr(&st);
    assert!(
        !st.status.success() && err.contains("at least 2 different seeds"),
        "{err}"
    );
}

/// A small real data set in `root`: the first `n` images of each class of
/// train and `m` of test, linked from the real FER-2013 (nothing copied).
fn linked_subset(root: &Path, n: usize, m: usize) -> PathBuf {
    for (split, k) in [("train", n), ("test", m)] {
        let src = common::fer_dir().join(split);
        let mut classes: Vec<_> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        classes.sort();
        for c in classes {
            let dst = root.join(split).join(c.file_name().unwrap());
            std::fs::create_dir_all(&dst).unwrap();
            let mut files: Vec<_> = std::fs::read_dir(&c)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for f in files.iter().take(k) {
                std::os::unix::fs::symlink(f, dst.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    root.to_path_buf()
}

/// Runs `fer` expecting a refusal (exit 2) whose message holds `expect`.
fn refused(cmd: &mut Command, expect: &str) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
    assert!(err.contains(expect), "{cmd:?}: {err}");
    assert!(!err.contains("panicked"), "{cmd:?}: {err}");
    err
}

#[test]
fn one_writer_per_run_and_resume_continues_the_recorded_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut child = fer()
        .args(["train", "configs/mlp.yaml", "--run-dir"])
        .arg(&run)
        .args(["--set", "train.subset=0.02", "--set", "train.epochs=30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |s| s.lines().count()) < 1 {
        assert!(t.elapsed() < Duration::from_secs(120), "no epoch finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second writer is refused with the holder's pid and host.
    let host = fer::provenance::hostname();
    let holder = format!("is in use by pid {} on host {host}", child.id());
    refused(fer().args(["train", "--resume"]).arg(&run), &holder);
    let pid = child.id();
    child.kill().unwrap(); // SIGKILL: the lock file stays behind
    child.wait().unwrap();
    assert!(run.join(".lock").exists());
    let model_bytes = || std::fs::read(run.join("checkpoints/last.safetensors")).ok();
    let before = model_bytes();

    // Resume resumes the same thing: a recipe key by --set, an edited
    // config.yaml are refused with the differences listed.
    refused(
        fer()
            .args(["train", "--resume"])
            .arg(&run)
            .args(["--set", "train.optimizer.lr=0.5"]),
        "train.optimizer.lr: 0.000392 recorded, 0.5 now (--set)",
    );
    let cfg = run.join("config.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("dropout: 0.163", "dropout: 0.4")).unwrap();
    refused(
        fer().args(["train", "--resume"]).arg(&run),
        "model.dropout: 0.163 recorded, 0.4 now (the file was edited)",
    );
    std::fs::write(&cfg, &text).unwrap();
    assert_eq!(model_bytes(), before, "a refused resume changed the run");

    // A run recorded before keys were added (as every run started before
    // an upgrade): the missing keys are their defaults, not changes.
    let prov_path = run.join("provenance.json");
    let mut prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&prov_path).unwrap()).unwrap();
    let data = prov["config"]["data"].as_object_mut().unwrap();
    assert!(data.remove("convert").is_some() && data.remove("test_fraction").is_some());
    std::fs::write(&prov_path, serde_json::to_vec(&prov).unwrap()).unwrap();

    // More epochs are a real need: accepted with --set and recorded. The
    // dead process's lock is taken over, naming it.
    let out = common::run_ok(
        fer()
            .args(["train", "--resume"])
            .arg(&run)
            .args(["--set", "train.epochs=2"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("was left locked by pid {pid} on host {host}")),
        "{err}"
    );
    assert!(!run.join(".lock").exists(), "the lock outlived its holder");
    let saved = RunConfig::load(&cfg, &[]).unwrap();
    assert_eq!(saved.train.epochs, 2);
    let prov: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("provenance.json")).unwrap())
            .unwrap();
    let change = &prov["resumes"][0]["changes"][0];
    assert_eq!(change["key"], "train.epochs");
    assert_eq!(
        (change["was"].as_u64(), change["now"].as_u64()),
        (Some(30), Some(2))
    );
    assert_eq!(prov["config"]["train"]["epochs"], 2);
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
    // Other data (by content, whatever its path) is refused too.
    let other = linked_subset(&tmp.path().join("other"), 40, 5);
    let model = || std::fs::read(run.join("model.safetensors")).unwrap();
    let shipped = model();
    refused(
        fer()
            .args(["train", "--resume"])
            .arg(&run)
            .arg("--data")
            .arg(&other),
        "the run was trained on data with digest",
    );
    assert!(model() == shipped, "a refused resume changed the run");
}

#[test]
fn impossible_work_fails_and_writes_no_model() {
    let tmp = tempfile::tempdir().unwrap();
    let few = linked_subset(&tmp.path().join("few"), 5, 3);
    let none = linked_subset(&tmp.path().join("none"), 0, 0);
    let run = |data: &Path, name: &str| {
        let mut c = fer();
        c.args([
            "train",
            "configs/mlp.yaml",
            "--set",
            "train.epochs=1",
            "--run-dir",
        ])
        .arg(tmp.path().join(format!("run-{name}")))
        .arg("--data")
        .arg(data);
        c
    };
    // 35 images less the validation split: fewer than one batch of 128.
    refused(
        &mut run(&few, "few"),
        "fewer than one batch (train.batch_size 128): no optimiser step would be taken",
    );
    refused(&mut run(&none, "none"), "no usable images in any split");
    refused(
        fer().args(["data", "stats", "--data"]).arg(&none),
        "no usable images in any split",
    );
    for name in ["few", "none"] {
        let dir = tmp
            .path()
            .join(format!("run-{name}"))
            .join("model.safetensors");
        assert!(!dir.exists(), "{} written", dir.display());
    }
    // An empty split a command needs: `fer eval` on a test/ with no images.
    let no_test = linked_subset(&tmp.path().join("no-test"), 5, 0);
    refused(
        fer()
            .args(["eval", "models/fer-release.safetensors", "--data"])
            .arg(&no_test),
        "the test split has no images; nothing to evaluate",
    );
}

/// The classical baseline (HOG + logistic regression by linfa) fitted on a
/// small real subset beats the majority baseline on validation and test, and
/// its model file (weights and HOG settings) predicts the same through
/// `fer eval` as the run's own evaluation.
#[test]
fn classical_baseline_beats_the_majority_and_its_file_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: classical\nseed: 0\n\
         data: {{dir: {dir}, augment: {{size: 48, crop: none}}}}\n\
         model: {{kind: classical, cell: 8, orientations: 9, block: 2, alpha: 30.0, max_iterations: 100, flip: false}}\n\
         train: {{epochs: 1, subset: 0.1, threads: 2}}\n",
        dir = common::fer_dir().display()
    );
    let cfg = RunConfig::load(&write_cfg(tmp.path(), &yaml), &[]).unwrap();
    let run = tmp.path().join("run");
    let out = fer::train::run(&cfg, &run, false).unwrap();
    assert_eq!(out.family, "classical");
    assert_eq!(out.history.len(), 1, "one fit, recorded as one epoch");
    // Majority ("happy"): 722 of 2873 val and 895 of 3589 test images.
    let (val, test) = (out.val.overall.accuracy, out.test.overall.accuracy);
    assert!(val > 722.0 / 2873.0 + 0.05, "val acc {val}");
    assert!(test > 895.0 / 3589.0 + 0.05, "test acc {test}");
    // 48 px / 8 = 6 cells, 5x5 blocks of 2x2 cells x 9 bins; a linear layer.
    assert_eq!(out.params, (900 * 7 + 7) as u64);
    let st = common::run_ok(
        fer()
            .args(["eval"])
            .arg(run.join("model.safetensors"))
            .args(["--json", "--data"])
            .arg(common::fer_dir()),
    );
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    common::assert_same_fraction(
        v["overall"]["accuracy"].as_f64().unwrap(),
        test,
        "fer eval --json",
    );
}

/// The shipped zoo models (`models/zoo/`) load, reach their family's
/// PublicTest target through `fer eval`, and work in `fer predict` and
/// `fer serve` with the same answer.
#[test]
fn shipped_zoo_models_evaluate_at_their_targets() {
    // (family, PublicTest threshold, with ten-crop TTA). The CNN reaches
    // its 69% target only with TTA (69.99% int8 with TTA, 68.38% without),
    // so it is evaluated so. ResNet18 and the ViT are held at what they
    // score with a single crop (65.67% and 52.58%; with TTA 67.85% and
    // 53.80%, docs/zoo.md), which catches a regression as surely at a
    // tenth of the cost: ten-crop TTA of three networks was five minutes
    // of this test on a 2-core CPU without VNNI.
    let targets = [
        ("classical", 0.42, false),
        ("mlp", 0.47, false),
        ("cnn", 0.69, true),
        ("resnet18", 0.65, false),
        ("vit", 0.52, false),
    ];
    // docs/report-zoo describes the runs the shipped files were quantized
    // from: each family's row has the file's own parameter and MAC counts
    // and the validation accuracy its weights were chosen by.
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::repo().join("docs/report-zoo/summary.json")).unwrap(),
    )
    .unwrap();
    let rows = summary["models"].as_array().unwrap();
    let dir = common::repo().join("models/zoo");
    let mut seen = 0;
    for (family, target, tta) in targets {
        let file = dir.join(format!("{family}.safetensors"));
        if !file.exists() {
            continue;
        }
        seen += 1;
        let clf = Classifier::load(&file, tch::Device::Cpu).unwrap();
        assert_eq!(clf.meta.model.family(), family, "{}", file.display());
        let row = rows
            .iter()
            .find(|r| r["family"] == family)
            .unwrap_or_else(|| panic!("no {family} row in the zoo report"));
        assert_eq!(row["params"].as_u64(), Some(clf.meta.params), "{row}");
        assert_eq!(row["macs"].as_u64(), Some(clf.meta.macs), "{row}");
        if let Some(acc) = clf.meta.val_accuracy {
            // summary.json was written from a value read back from JSON
            // before float parsing was exact: the same figure, not the same bits.
            let written = row["selection_val_acc"].as_f64().unwrap();
            common::assert_same_fraction(written, acc, &format!("{row}"));
        }
        let st = common::run_ok(
            fer()
                .args(["eval"])
                .arg(&file)
                .args(if tta { &["--tta"][..] } else { &[] })
                .args(["--json", "--data"])
                .arg(common::fer_dir()),
        );
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        let acc = v["by_origin"]["PublicTest"]["accuracy"].as_f64().unwrap();
        assert!(acc >= target, "{family}: PublicTest {acc} below {target}");

        // The same file in `fer predict` and `fer serve`: one face in the
        // astronaut photo, the same emotion from both.
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        common::run_ok(
            fer()
                .arg("predict")
                .arg(common::astronaut())
                .arg("--model")
                .arg(&file)
                .arg("--out")
                .arg(&out),
        );
        let mut rd = csv::Reader::from_path(out.join("predictions.csv")).unwrap();
        let head = rd.headers().unwrap().clone();
        let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 1, "{family}: one face in the astronaut photo");
        let col = head.iter().position(|h| h == "label").unwrap();
        let label = rows[0][col].to_string();
        assert!(
            fer::data::fer2013::CLASSES.contains(&label.as_str()),
            "{family}: {label}"
        );
        let mut cmd = fer();
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--model"])
            .arg(&file);
        let server = common::spawn_server(cmd);
        let v: serde_json::Value = reqwest::blocking::Client::new()
            .post(format!("{}api/predict", server.url))
            .body(std::fs::read(common::astronaut()).unwrap())
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            v["faces"][0]["label"].as_str(),
            Some(label.as_str()),
            "{family}: {v}"
        );
    }
    assert_eq!(
        seen,
        targets.len(),
        "every family shipped in {}",
        dir.display()
    );
    // ...and nothing else, so that no shipped file goes unchecked.
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, targets.len(), "only the zoo in {}", dir.display());
}

/// `train.init`: a run starts from a model file's weights (the release),
/// pins the file by its hash, says that a refit's weights have seen this
/// run's validation images, and refuses files that are not its network.
#[test]
fn fine_tuning_starts_from_a_model_file_and_says_what_it_saw() {
    let tmp = tempfile::tempdir().unwrap();
    let release = common::repo().join("models/fer-release.safetensors");
    let meta = artifact::ModelMeta::read(&release).unwrap();
    assert_eq!(meta.val_fraction, 0.0, "the release is a refit");
    let yaml = |model: &str, init: &Path| {
        format!(
            "name: tuned\nseed: 1\n\
             data: {{dir: {dir}, augment: {{size: {size}}}}}\n\
             model: {model}\n\
             train: {{epochs: 1, batch_size: 32, max_batches: 1, threads: 2, init: {init},\n\
               optimizer: {{kind: sgd, lr: 1.0e-5}}, schedule: {{kind: constant}}}}\n",
            dir = common::fer_dir().display(),
            size = meta.preprocess.size,
            init = init.display()
        )
    };
    let own = serde_json::to_string(&meta.model).unwrap();
    let cfg = RunConfig::load(&write_cfg(tmp.path(), &yaml(&own, &release)), &[]).unwrap();
    let run = tmp.path().join("run");
    let out = fer::train::run(&cfg, &run, false).unwrap();
    // One step at lr 1e-5 from the release: its accuracy on images it was
    // trained on, where a random start after one batch is near chance.
    assert!(
        out.val.overall.accuracy > 0.6,
        "{}",
        out.val.overall.accuracy
    );
    let tuned = model_tensors(&fer::layout::RunDir(run.clone()).model());
    let shipped = model_tensors(&release);
    let mut compared = 0;
    for (k, t) in tuned.iter().filter(|(k, _)| k.ends_with(".weight")) {
        let a = Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap();
        let b = Vec::<f32>::try_from(&shipped[k].flatten(0, -1)).unwrap();
        assert!(
            common::max_gap(&a, &b) < 1e-3,
            "{k} moved away from the release"
        );
        compared += 1;
    }
    assert!(compared >= 9, "{compared} weight tensors");
    let prov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("provenance.json")).unwrap()).unwrap();
    let hash = blake3::hash(&std::fs::read(&release).unwrap())
        .to_hex()
        .to_string();
    assert_eq!(prov["init"]["blake3"], hash.as_str());
    assert_eq!(prov["init"]["name"], meta.name.as_str());
    assert_eq!(prov["init"]["sees_val"], true, "{prov}");

    // Refused before anything trains, naming the field and the file.
    let zoo = common::repo().join("models/zoo");
    let widths = own.replace("352", "320");
    let ensemble = format!(
        "{}ensemble: {{members: [{{seed: 1}}, {{seed: 2}}]}}\n",
        yaml(&own, &release).replace("name: tuned", "name: pair")
    );
    for (text, expect) in [
        (
            yaml(
                &own,
                &common::repo().join("models/fer-release-int8.safetensors"),
            ),
            "an int8 model file",
        ),
        (
            yaml(&own, &zoo.join("vit.safetensors")),
            "holds a vit network",
        ),
        (yaml(&widths, &release), "is not this run's model"),
        (
            yaml(&own, &tmp.path().join("none.safetensors")),
            "none.safetensors",
        ),
        (ensemble, "ensemble's members"),
    ] {
        let dir = tmp.path().join("refused");
        let _ = std::fs::remove_dir_all(&dir);
        let err = RunConfig::load(&write_cfg(tmp.path(), &text), &[])
            .and_then(|cfg| fer::train::run(&cfg, &dir, false));
        let err = match err {
            Ok(_) => panic!("{expect}: it trained"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(expect), "{expect}: {err}");
        assert!(!dir.join("model.safetensors").exists(), "{expect}");
    }
}
