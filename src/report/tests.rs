//! Sections on synthetic report data: rows, number formats and order.

use super::collect::{self, ErrorGallery, Latency, Member, ReportData, Run, SweepData};
use super::sections;
use crate::config::RunConfig;
use crate::data::quality::{DupCounts, Quality};
use crate::data::stats::{DataStats, SplitCounts};
use crate::eval::metrics::{ClassMetrics, Metrics};
use crate::eval::robust::{Perturbation, Robustness, Row};
use crate::eval::EvalReport;
use crate::layout::RunDir;
use crate::metric::{Direction, MetricKey};
use crate::sweep::config::Objective;
use crate::sweep::journal::{TrialRecord, TrialState};
use crate::train::Outcome;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Metrics with accuracy `acc`; per-class F1 rises with the class index by
/// `step` from 0.3; `confusion[t][q]` is `t + q` off the diagonal, so row
/// `t` sums to `71 + 5 t`.
fn metrics(n: usize, acc: f64, step: f64) -> Metrics {
    Metrics {
        n,
        accuracy: acc,
        top2_accuracy: acc,
        macro_f1: acc - 0.1,
        weighted_f1: acc - 0.05,
        log_loss: 1.25,
        ece: 0.0421,
        per_class: (0..crate::data::fer2013::CLASSES.len())
            .map(|k| ClassMetrics {
                precision: 0.5,
                recall: 0.25,
                f1: 0.3 + step * k as f64,
                support: 100 + k,
            })
            .collect(),
        confusion: (0..crate::data::fer2013::CLASSES.len())
            .map(|t| {
                (0..crate::data::fer2013::CLASSES.len())
                    .map(|q| if t == q { 50 } else { t + q })
                    .collect()
            })
            .collect(),
        confusion_normalized: vec![
            vec![0.0; crate::data::fer2013::CLASSES.len()];
            crate::data::fer2013::CLASSES.len()
        ],
    }
}

fn split(name: &str, m: Metrics) -> EvalReport {
    EvalReport {
        classes: crate::data::fer2013::classes(),
        split: name.into(),
        tta: false,
        overall: m,
        by_origin: BTreeMap::new(),
        intervals: BTreeMap::new(),
        seconds: 1.0,
        img_per_s: 100.0,
        data: None,
    }
}

fn outcome(family: &str, val: f64, test: f64, step: f64) -> Outcome {
    Outcome {
        name: family.into(),
        family: family.into(),
        params: 1_170_000,
        macs: 2_500_000,
        device: "cpu".into(),
        threads: 2,
        data_digest: "0123456789abcdef0123".into(),
        best_epoch: Some(7),
        epochs_run: 8,
        stopped_early: false,
        pruned: false,
        history: Vec::new(),
        train_seconds: 1499.6,
        train_img_per_s: 320.4,
        swa: None,
        logit_adjust: None,
        select: None,
        val: split("val", metrics(if val > 0.0 { 100 } else { 0 }, val, 0.0)),
        test: split("test", metrics(1000, test, step)),
    }
}

#[test]
fn the_weights_clause_says_how_the_epoch_was_chosen() {
    use crate::config::train::Select;
    let mut o = outcome("cnn", 0.6, 0.6, 0.01);
    assert_eq!(
        o.weights_clause(),
        ", weights of epoch 7 (best on validation)"
    );
    o.select = Some(Select::ValAcc);
    assert_eq!(
        o.weights_clause(),
        ", weights of epoch 7 (best on validation)"
    );
    o.select = Some(Select::Last);
    o.best_epoch = Some(8);
    let last = o.weights_clause();
    assert!(
        last.contains("last epoch, 8") && last.contains("validation did not choose it"),
        "{last}"
    );
    o.val = outcome("cnn", 0.0, 0.6, 0.01).val;
    assert!(
        o.weights_clause().contains("a refit"),
        "{}",
        o.weights_clause()
    );
}

fn run(label: &str, family: &str, val: f64, test: f64) -> Run {
    let kind = if family == "cnn" { "cnn" } else { "majority" };
    let cfg: RunConfig =
        serde_saphyr::from_str(&format!("name: {label}\nmodel: {{kind: {kind}}}\n")).unwrap();
    Run {
        dir: RunDir::new(format!("runs/{label}")),
        label: label.into(),
        out: outcome(family, val, test, 0.01),
        cfg,
        prov: None,
        config_hash: "feedfacecafebeef".into(),
        has_net: family != "majority",
        latency: None,
        members: Vec::new(),
        calibration: Vec::new(),
        robustness: None,
        gradcam: None,
        source: None,
        int8_file: false,
    }
}

fn data(runs: Vec<Run>) -> ReportData {
    let counts = |c: [usize; 7]| SplitCounts {
        split: "train (all)".into(),
        counts: c.to_vec(),
        total: c.iter().sum(),
    };
    let stats = DataStats {
        dir: "data".into(),
        digest: "abc".into(),
        classes: crate::data::fer2013::classes(),
        splits: vec![
            counts([400, 40, 410, 720, 480, 320, 500]),
            SplitCounts {
                split: "test".into(),
                ..counts([50, 5, 51, 90, 60, 40, 62])
            },
        ],
        imbalance_ratio: 18.0,
        val_fraction: 0.1,
        pixel_mean: 0.5077,
        pixel_std: 0.255,
        split_seed: 0,
        issues: Vec::new(),
        quality: Quality {
            blank_train: vec!["a".into()],
            dup_train: DupCounts {
                groups: 3,
                extra_copies: 4,
                label_conflicts: 1,
            },
            train_in_test: 5,
            train_in_test_label_conflicts: 2,
            ..Quality::default()
        },
        load_seconds: 0.0,
        from_cache: true,
    };
    let deep = (0..runs.len()).filter(|&i| runs[i].has_net).collect();
    ReportData {
        name: "zoo".into(),
        input: PathBuf::from("runs/zoo"),
        out: PathBuf::from("reports/zoo"),
        robustness_images: 500,
        test_images: 300,
        stats,
        digest: "d1g3st".into(),
        runs,
        deep,
        errors: None,
        sweep: None,
        cpu: "Test CPU".into(),
        threads: 4,
        importance: Vec::new(),
        notes: None,
        paired: None,
        command: "fer report runs/zoo --out reports/zoo".into(),
        seed_sets: Vec::new(),
        across: Vec::new(),
    }
}

fn zoo() -> ReportData {
    let mut cnn = run("cnn", "cnn", 0.612, 0.603);
    cnn.latency = Some(Latency {
        batch1_ms_median: 2.5,
        batch1_ms_p95: 3.0,
        threads: 4,
        cpu: "Test CPU".into(),
        int8_batch1_ms_median: Some(1.25),
        int8_measured: true,
    });
    let mut mlp = run("mlp", "mlp", 0.45, 0.44);
    mlp.out.test = split("test", metrics(1000, 0.44, 0.0));
    mlp.latency = Some(Latency {
        batch1_ms_median: 0.0512,
        batch1_ms_p95: 0.06,
        threads: 4,
        cpu: "Test CPU".into(),
        int8_batch1_ms_median: None,
        int8_measured: true,
    });
    data(vec![cnn, mlp, run("majority", "majority", 0.251, 0.249)])
}

#[test]
fn header_counts_run_folders() {
    let d = zoo();
    assert_eq!(
        sections::header(&d),
        "# Report: zoo\n\nGenerated by `fer report runs/zoo` from 3 run folders. Models are selected on the validation split; test figures are reported, never used to choose.\n\n"
    );
    let one = data(vec![run("cnn", "cnn", 0.6, 0.6)]);
    assert!(sections::header(&one).contains("from 1 run folder. "));
}

#[test]
fn data_set_has_every_split_imbalance_and_quality() {
    let md = sections::data_set(&zoo());
    assert!(md.starts_with("## 1. Data set\n\n![class distribution](data-classes.png)\n\n| split | angry | disgust | fear | happy | sad | surprise | neutral | total |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"), "{md}");
    let train = md.find("| train (all) | 400 | 40 | 410 | 720 | 480 | 320 | 500 | 2870 |\n");
    let test = md.find("| test | 50 | 5 | 51 | 90 | 60 | 40 | 62 | 358 |\n");
    assert!(train.is_some() && test.is_some() && train < test, "{md}");
    assert!(md.contains("\nImbalance: happy has 720 training images (25.1%), disgust has 40 (1.4%): a ratio of 18.0. "), "{md}");
    assert!(md.ends_with("\nQuality: 1 near-blank training images and 0 in test; 3 duplicate groups in train (4 extra copies, 1 with conflicting labels); 5 training images also appear in test (2 with another label). Data digest `d1g3st`.\n\n"), "{md}");
}

#[test]
fn comparison_rows_keep_order_and_formats() {
    let mut d = zoo();
    d.runs[2].out.val.overall.n = 0; // the majority run as a refit
    let md = sections::comparison(&d);
    let rows = [
        "| cnn | cnn | 61.2% | 60.3% | 0.553 | 0.503 | 0.310 | 0.320 | 1170000 | 2.5 M | 25 min | 320 | 2.50 ms | 1.25 ms | - |\n",
        "| mlp | mlp | 45.0% | 44.0% | 0.390 | 0.340 | 0.300 | 0.300 | 1170000 | 2.5 M | 25 min | 320 | 0.051 ms | - | - |\n",
        "| majority | majority | none (refit) | 24.9% | 0.199 | 0.149 | 0.310 | 0.320 | 1170000 | 2.5 M | 25 min | 320 | - | - | - |\n",
    ];
    let at: Vec<usize> = rows
        .iter()
        .map(|r| md.find(r).unwrap_or_else(|| panic!("no row {r} in\n{md}")))
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "rows out of order:\n{md}"
    );
    assert!(md.contains("\n![comparison](comparison.png)\n\n"));
    assert!(md.ends_with("Latency: median of 50 single-image forward passes on Test CPU with 4 threads, measured once per model (`latency.json` in its run folder); int8 is the same model quantized in memory as `fer quantize` does it (calibrated on 256 training images), \"-\" where it does not quantize.\n\n"), "{md}");
}

#[test]
fn tradeoffs_place_each_model_against_the_front() {
    let mut d = zoo();
    d.runs[1].out.train_seconds = 7200.0;
    let md = sections::tradeoffs(&d);
    assert!(md.starts_with("### Accuracy against cost\n\n"), "{md}");
    // Faster but less accurate: both on the latency front. Slower to train
    // and less accurate: the MLP is behind the CNN on training time.
    assert!(
        md.contains("| cnn | 60.3% | 2.500 ms | **on the front** | 0.417 h | **on the front** |\n"),
        "{md}"
    );
    assert!(
        md.contains("| mlp | 44.0% | 0.051 ms | **on the front** | 2.000 h | behind cnn |\n"),
        "{md}"
    );
    assert!(!md.contains("| majority"), "{md}");
    // The wall-clock view needs two validated histories; one model alone has no trade-off.
    assert!(!md.contains("Learning curves on one clock"), "{md}");
    let one = data(vec![run("cnn", "cnn", 0.6, 0.6)]);
    assert_eq!(sections::tradeoffs(&one), "");
}

#[test]
fn commentary_names_the_best_model_and_the_gains() {
    let md = sections::comparison(&zoo());
    assert!(md.contains("The best model on validation is **cnn** (cnn): 61.2% validation accuracy, 60.3% test accuracy, weighted F1 0.553. It is +35.4 points above the majority-class floor (24.9%). "), "{md}");
    // The CNN's per-class F1 rises by 0.01 a class over the MLP's flat one.
    assert!(md.contains("Spatial structure pays: the cnn gains +16.3 points of test accuracy over the MLP (60.3% against 44.0%); the classes that gain most in F1 are neutral (+0.06) and surprise (+0.05), the least angry (+0.00). "), "{md}");
    assert!(md.contains("Disgust, with 1.5% of the training images, peaks at F1 0.31 across the learned models.\n"), "{md}");
}

#[test]
fn per_model_sections_follow_deep_order_with_links_and_hard_classes() {
    let mut d = zoo();
    d.deep = vec![1, 0];
    let md = sections::per_model(&d);
    let (mlp, cnn) = (md.find("### mlp (mlp)\n\n"), md.find("### cnn (cnn)\n\n"));
    assert!(mlp.is_some() && cnn.is_some() && mlp < cnn, "{md}");
    assert!(!md.contains("majority"));
    assert!(md.contains("1170000 parameters, 2.5 M MACs per image; 8 epochs, weights of epoch 7 (best on validation); test accuracy 60.3%, weighted F1 0.553, macro F1 0.503, log loss 1.250, ECE 0.042.\n\n"), "{md}");
    assert!(md.contains("![confusion](cnn-confusion.png) ![per-class](cnn-per-class.png) ![calibration](cnn-calibration.png)\n\n"));
    assert!(md.contains("Hard classes: **disgust**: F1 0.310 (precision 0.500, recall 0.250, 101 test images); **fear**: F1 0.320 (precision 0.500, recall 0.250, 102 test images).\n\n"), "{md}");
    assert!(!md.contains("learning curves"), "no history, no curves");
}

#[test]
fn ensemble_members_table_lists_each_member() {
    let mut d = data(vec![run("ens", "cnn", 0.6, 0.6)]);
    let member = |seed: u64, dir: &str| Member {
        seed,
        dir: dir.into(),
        set: "-".into(),
        out: outcome("cnn", 0.55, 0.5, 0.0),
    };
    let r = &mut d.runs[0];
    r.cfg.ensemble = Some(Default::default());
    r.members = vec![member(3, "member-3"), member(4, "member-4")];
    let md = sections::per_model(&d);
    assert!(md.contains("Seed ensemble: the softmax of 2 members, each this config trained with its own seed, is averaged; training time and epochs above are the members' sums, and Grad-CAM (section 5) explains member 0. Each member alone, evaluated as it was trained (`<member folder>/eval.json`):\n\n"), "{md}");
    let rows = [
        "| 0 | 3 | 8 | 7 | 1500 s | 55.0% | 50.0% | 0.450 | 0.400 | - |\n",
        "| 1 | 4 | 8 | 7 | 1500 s | 55.0% | 50.0% | 0.450 | 0.400 | - |\n",
    ];
    let a = md.find(rows[0]);
    assert!(a.is_some() && a < md.find(rows[1]), "{md}");
}

#[test]
fn robustness_section_says_which_cases_fall_below_target() {
    let mut d = zoo();
    let rob = |rows| Robustness {
        images: 300,
        seed: 0,
        clean_accuracy: 0.6,
        rows,
        baseline: None,
    };
    d.runs[0].robustness = Some(rob(Vec::new()));
    let md = sections::robustness(&d);
    assert!(md.contains("Accuracy under perturbations of 300 test images (a seeded sample; `fer eval MODEL --robustness --limit 500` prints the same table). Retention is perturbed over clean accuracy; the target is 80%."), "{md}");
    assert!(md.contains("### cnn\n\n"));
    assert!(md.contains("![robustness](cnn-robustness.png)\n\nEvery case keeps at least 80% of clean accuracy.\n\n"), "{md}");
    assert!(!md.contains("### mlp"), "no measurement, no subsection");
    let blur = |severity: usize, level: f64, retention: f64| Row {
        perturbation: Perturbation::Blur,
        name: "blur".into(),
        unit: "sigma".into(),
        severity,
        level,
        accuracy: 0.6 * retention,
        retention,
    };
    d.runs[0].robustness = Some(rob(vec![
        blur(1, 0.5, 0.95),
        blur(2, 1.5, 0.624),
        blur(3, 2.5, 0.4),
    ]));
    let md = sections::robustness(&d);
    assert!(
        md.ends_with("Below the 80% target: blur 1.5 (62%), blur 2.5 (40%).\n\n"),
        "{md}"
    );
}

#[test]
fn deep_runs_are_the_best_of_each_family_in_a_sweep() {
    let mut runs = vec![
        run("trial 0 cnn", "cnn", 0.5, 0.5),
        run("trial 1 mlp", "mlp", 0.4, 0.4),
        run("trial 2 cnn", "cnn", 0.6, 0.5),
        run("trial 3 cnn", "cnn", 0.6, 0.7),
        run("trial 4 majority", "majority", 0.9, 0.2),
    ];
    // In families' order of first appearance; the first of equals wins.
    assert_eq!(collect::deep_runs(&runs, true), [2, 1, 4]);
    // Outside a sweep, every run with a network.
    assert_eq!(collect::deep_runs(&runs, false), [0, 1, 2, 3]);
    // The error gallery's model: best on validation among those with a
    // network, the first of equals.
    assert_eq!(collect::best_on_val(&runs), Some(2));
    runs.retain(|r| !r.has_net);
    assert_eq!(collect::best_on_val(&runs), None);
}

#[test]
fn interpretability_lists_confused_pairs_largest_first() {
    let mut d = zoo();
    d.errors = Some(ErrorGallery {
        run: 0,
        rows: Vec::new(),
    });
    let md = sections::interpretability(&d);
    assert!(md.contains("No model here has spatial feature maps"));
    assert!(md.contains("### Error gallery: cnn\n\n"));
    // confusion[t][q] = t + q: the largest off-diagonal cells by count,
    // ties by (true, predicted); six of them.
    let table =
        "| true | predicted | test images | share of the true class |\n|---|---|---:|---:|\n\
| surprise | neutral | 11 | 11.5% |\n\
| neutral | surprise | 11 | 10.9% |\n\
| sad | neutral | 10 | 11.0% |\n\
| neutral | sad | 10 | 9.9% |\n\
| happy | neutral | 9 | 10.5% |\n\
| sad | surprise | 9 | 9.9% |\n\n";
    assert!(md.ends_with(table), "{md}");
}

fn trial(n: usize, state: TrialState, value: f64, lr: f64) -> TrialRecord {
    let mut params = BTreeMap::new();
    params.insert("train.lr".to_string(), serde_json::json!(lr));
    params.insert("model.convs".to_string(), serde_json::json!(n + 1));
    let mut t = TrialRecord::finished(n, params, state, Some(value));
    t.family = Some("cnn".into());
    t
}

#[test]
fn sweep_ranks_complete_trials_by_direction() {
    let trials = vec![
        trial(0, TrialState::Complete, 0.5, 0.01),
        trial(1, TrialState::Pruned, 0.9, 0.1),
        trial(2, TrialState::Complete, 0.7, 0.001),
        trial(3, TrialState::Complete, 0.5, 0.02),
    ];
    let mut d = zoo();
    d.sweep = Some(SweepData {
        trials,
        objective: Objective {
            metric: MetricKey::ValAcc,
            direction: Direction::Maximize,
        },
        sampler: "tpe",
        objectives: vec![],
        cv: false,
    });
    let md = sections::sweep(&d);
    assert!(md.starts_with("## 6. Sweep\n\n4 trials with the tpe sampler, objective val/acc (maximise): 3 complete, 1 pruned, 0 failed.\n\n![history](sweep-history.png)\n\n![parameters](sweep-params.png)\n\n"), "{md}");
    assert!(
        md.ends_with(
            "| rank | trial | family | val/acc | parameters |\n|---:|---:|---|---:|---|\n\
| 1 | 2 | cnn | 0.7000 | `model.convs=3` `train.lr=0.0010` |\n\
| 2 | 0 | cnn | 0.5000 | `model.convs=1` `train.lr=0.0100` |\n\
| 3 | 3 | cnn | 0.5000 | `model.convs=4` `train.lr=0.0200` |\n\n"
        ),
        "{md}"
    );
    let s = d.sweep.as_mut().unwrap();
    s.objective = Objective {
        metric: MetricKey::ValLoss,
        direction: Direction::Minimize,
    };
    let (_, _, best) = s.history();
    assert_eq!(best, [(0.0, 0.5), (1.0, 0.5), (2.0, 0.5), (3.0, 0.5)]);
    let md = sections::sweep(&d);
    assert!(md.contains("objective val/loss (minimise)"), "{md}");
    let first = md.find("| 1 | 0 | cnn | 0.5000 |");
    assert!(
        first.is_some() && first < md.find("| 2 | 3 | cnn | 0.5000 |"),
        "{md}"
    );
    assert!(md.contains("| 3 | 2 | cnn | 0.7000 |"), "{md}");

    // Two objectives: the front, its chart, and the best by the stated rule.
    use crate::sweep::config::{ObjectiveSpec, TrialMetric};
    let s = d.sweep.as_mut().unwrap();
    s.objectives = vec![
        ObjectiveSpec {
            metric: TrialMetric::Epoch(MetricKey::ValAcc),
            direction: Direction::Maximize,
            limit: None,
        },
        ObjectiveSpec {
            metric: TrialMetric::LatencyMs,
            direction: Direction::Minimize,
            limit: Some(2.0),
        },
    ];
    // (acc, ms): 0 (0.5, 1), 2 (0.7, 3), 3 (0.5, 2): 3 is dominated by 0.
    for (t, v) in s
        .trials
        .iter_mut()
        .zip([[0.5, 1.0], [0.9, 0.5], [0.7, 3.0], [0.5, 2.0]])
    {
        t.values = Some(v.to_vec());
    }
    let md = sections::sweep(&d);
    assert!(
        md.contains("Pareto front (2 of the complete trials"),
        "{md}"
    );
    assert!(
        md.contains("| 0 | 0.5000 | 1.0000 |\n| 2 | 0.7000 | 3.0000 |"),
        "{md}"
    );
    assert!(
        md.contains("among those with latency_ms <= 2): trial 0."),
        "{md}"
    );
}

#[test]
fn not_a_sweep_says_so() {
    assert_eq!(
        sections::sweep(&zoo()),
        "## 6. Sweep\n\nNot a sweep: these runs were trained one by one (`fer train`).\n\n"
    );
}

#[test]
fn reproducibility_has_a_row_per_run() {
    let mut d = zoo();
    let mut p = crate::provenance::Provenance::here();
    p.command = "fer train a.yaml | tee log".into();
    p.cpu = "Test CPU".into();
    p.cores = 16;
    p.git_commit = "abc1234".into();
    d.runs[1].prov = Some(p);
    let md = sections::reproducibility(&d);
    assert!(md.starts_with("## 7. Reproducibility\n\nRegenerate this report: `fer report runs/zoo --out reports/zoo`.\n\n"));
    let cnn = md.find("| cnn | `fer train runs/cnn/config.yaml` | not recorded | `0123456789abcdef` | `feedfacecafebeef` | not recorded |\n");
    let mlp = md.find("| mlp | `fer train a.yaml \\| tee log` | abc1234 | `0123456789abcdef` | `feedfacecafebeef` | Test CPU, 2 threads of 16 cores |\n");
    assert!(cnn.is_some() && mlp.is_some() && cnn < mlp, "{md}");
    assert!(md.ends_with(
        "Runs that predate `provenance.json` do not record their commit or hardware.\n"
    ));
}

#[test]
fn the_regenerate_command_keeps_every_section_option() {
    let o = crate::report::ReportOptions {
        input: PathBuf::from("runs/zoo"),
        out: None,
        data: None,
        robustness_images: 500,
        robustness_baseline: Some(PathBuf::from("models/zoo/cnn.safetensors")),
        importance: vec![PathBuf::from("runs/zoo-cnn"), PathBuf::from("runs/zoo-vit")],
        notes: Some(PathBuf::from("docs/zoo-notes.md")),
        other_data: vec![PathBuf::from("/data/six")],
        class_maps: vec!["joy=happy,calm=-".into()],
        tta: true,
    };
    assert_eq!(
        o.command(std::path::Path::new("docs/report-zoo")),
        "fer report runs/zoo --out docs/report-zoo --robustness-images 500 \
         --robustness-baseline models/zoo/cnn.safetensors --importance runs/zoo-cnn --importance runs/zoo-vit --notes docs/zoo-notes.md \
         --other-data /data/six --class-map 'joy=happy,calm=-' --tta"
    );
}
