//! `fer sweep` end to end on real FER-2013 subsets: a kill mid-trial and
//! two `--resume`s at once (no trial lost, duplicated or counted twice; a
//! resume that changes the recipe refused), failed trials, bad experiment
//! files, parallel workers (`--workers`, `--join`, a worker killed mid-trial,
//! `--status`) and a real one-node Slurm.

use crate::common;

use fer::sweep::config::Experiment;
use fer::sweep::journal::{read_events, rebuild, Event, TrialState};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::repo;

use common::fer;

/// An experiment file in `experiments/` style, written under a temp dir
/// that has `configs/` beside it (a symlink to the repo's).
fn experiment(tmp: &Path, body: &str) -> PathBuf {
    let _ = std::os::unix::fs::symlink(repo().join("configs"), tmp.join("configs"));
    std::fs::create_dir_all(tmp.join("experiments")).unwrap();
    let p = tmp.join("experiments/exp.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn kill_mid_trial_then_resume_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = tmp.path().join("sweep");
    let exp = repo().join("experiments/smoke.yaml");
    let mut child = fer()
        .args(["sweep"])
        .arg(&exp)
        .arg("--sweep-dir")
        .arg(&sweep)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once trial 1 has reported its first epoch: it is mid-trial.
    let journal = sweep.join("trials.jsonl");
    let t = Instant::now();
    loop {
        let events = read_events(&journal).unwrap_or_default();
        if events.iter().any(|e| {
            matches!(
                e,
                Event::Intermediate {
                    trial: 1,
                    epoch: 1,
                    ..
                }
            )
        }) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "trial 1 never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "sweep ended before the kill"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let before = rebuild(&read_events(&journal).unwrap());
    assert!(
        before.iter().any(|t| t.state == TrialState::Running),
        "{before:?}"
    );

    // A resume that would change the recipe is refused, naming the key.
    let out = fer()
        .args(["sweep"])
        .arg(&exp)
        .args(["--resume", "--set", "train.epochs=3", "--sweep-dir"])
        .arg(&sweep)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("train.epochs: 2 recorded, 3 now (--set)"),
        "{err}"
    );

    // Two resumes at once: each trial is run by one process only (the
    // trial's folder lock); the other says who holds it and takes another.
    let resume = || {
        fer()
            .args(["sweep"])
            .arg(&exp)
            .arg("--resume")
            .arg("--sweep-dir")
            .arg(&sweep)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (resume(), resume());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let err = String::from_utf8_lossy(&a.stderr).to_string() + &String::from_utf8_lossy(&b.stderr);
    assert!(a.status.success() && b.status.success(), "{err}");
    assert_eq!(
        err.matches("resuming trial 1 from its checkpoint").count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("has exited"),
        "the killed process is named: {err}"
    );

    let events = read_events(&journal).unwrap();
    let started: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::TrialStarted { trial, .. } => Some(*trial),
            _ => None,
        })
        .collect();
    let finished: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::TrialFinished { trial, .. } => Some(*trial),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![0, 1, 2], "each trial asked for exactly once");
    let claimed: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::TrialClaimed { trial, .. } => Some(*trial),
            _ => None,
        })
        .collect();
    assert_eq!(claimed, vec![1], "the killed trial was taken over once");
    let mut f = finished.clone();
    f.sort();
    assert_eq!(
        f,
        vec![0, 1, 2],
        "each trial finished exactly once: {finished:?}"
    );
    let trials = rebuild(&events);
    for t in &trials {
        assert_eq!(t.state, TrialState::Complete, "{t:?}");
        assert_eq!(t.intermediate.len(), 2, "one value per epoch: {t:?}");
    }
    // The interrupted trial continued from its checkpoint: its run folder
    // holds each epoch once.
    let metrics = std::fs::read_to_string(sweep.join("trials/001/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    assert!(sweep.join("best-model.safetensors").exists());
    let summary = std::fs::read_to_string(sweep.join("summary.md")).unwrap();
    assert!(summary.contains("Best overall: trial"), "{summary}");
    // The resolved experiment was written into the sweep folder.
    let saved: Experiment = fer::config::load_yaml(&sweep.join("config.yaml")).unwrap();
    assert_eq!(saved.name, "smoke");
}

#[test]
fn failed_trials_are_recorded_and_only_all_failed_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    // lr 1e12 diverges at once: every trial fails, exit code 1.
    let p = experiment(
        tmp.path(),
        "name: failing\ndata: fer2013\nmodel: {kind: mlp, hidden: [32]}\ntrain: smoke\n\
         search: {sampler: {kind: random}, n_trials: 2}\n\
         set: {train.epochs: 1, train.schedule: {kind: constant}}\n\
         space:\n  train.optimizer.lr: {float: [1.0e11, 1.0e12], log: true}\n",
    );
    let out = fer()
        .args(["sweep"])
        .arg(&p)
        .arg("--sweep-dir")
        .arg(tmp.path().join("s1"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trials = rebuild(&read_events(&tmp.path().join("s1/trials.jsonl")).unwrap());
    assert_eq!(trials.len(), 2);
    assert!(trials
        .iter()
        .all(|t| t.state == TrialState::Failed
            && t.error.as_deref().unwrap_or("").contains("diverged")));
}

/// A sweep can optimise robustness: with `val/robust_acc` as its objective
/// each trial measures the corrupted validation copy every epoch, its value
/// is that metric at its selected epoch, and the best trial is the most
/// robust one. A two-objective search takes it as its second objective.
#[test]
fn a_smoke_sweep_optimises_robust_validation_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let p = experiment(
        tmp.path(),
        "name: robust\nseed: 2\ndata: fer2013\nmodel: {kind: cnn, widths: [8, 16], convs: 1}\n\
         train: smoke\nset: {train.epochs: 2}\n\
         search: {sampler: {kind: random}, n_trials: 2,\
           objective: {metric: val/robust_acc, direction: maximize}}\n\
         space:\n  train.optimizer.lr: {float: [0.01, 0.1], log: true}\n",
    );
    let dir = tmp.path().join("s");
    common::run_ok(fer().args(["sweep"]).arg(&p).arg("--sweep-dir").arg(&dir));
    let trials = rebuild(&read_events(&dir.join("trials.jsonl")).unwrap());
    assert_eq!(trials.len(), 2);
    let mut values = Vec::new();
    for t in &trials {
        assert_eq!(t.state, TrialState::Complete, "{t:?}");
        let run = dir.join(format!("trials/{:03}", t.number));
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let recs: Vec<fer::metric::EpochRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 2);
        let v = t.value.unwrap();
        // The value is the robust accuracy of one of its epochs, and each
        // intermediate value is its epoch's.
        assert!(
            recs.iter().any(|r| r.val_robust_acc == Some(v)),
            "{v} {recs:?}"
        );
        for (epoch, x) in &t.intermediate {
            assert_eq!(recs[epoch - 1].val_robust_acc, Some(*x));
        }
        values.push((t.number, v));
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["objective"], "val/robust_acc");
    // The best trial has the highest robust accuracy (ties go to the first).
    let max = values.iter().map(|v| v.1).fold(f64::MIN, f64::max);
    let best = values.iter().find(|v| v.1 == max).unwrap().0;
    assert_eq!(summary["best"].as_u64(), Some(best as u64), "{values:?}");
}

/// `search.reseed`: once the three searched trials end, the best two
/// complete ones are each trained again under two more seeds (never
/// pruned, though the search has a pruner), and the winner
/// is the configuration with the best mean over its three seeds, shipped
/// as its best seed's model.
#[test]
fn a_sweep_reruns_its_best_trials_over_seeds_before_naming_a_winner() {
    let tmp = tempfile::tempdir().unwrap();
    let p = experiment(
        tmp.path(),
        "name: reseed\nseed: 4\ndata: fer2013\nmodel: {kind: cnn, widths: [8, 16], convs: 1}\n\
         train: smoke\nset: {train.epochs: 2, train.max_batches: 4}\n\
         search: {sampler: {kind: random}, n_trials: 3, reseed: {top: 2, seeds: 3},\
           pruner: {kind: median, n_startup_trials: 1, n_warmup_epochs: 1},\
           objective: {metric: val/acc, direction: maximize}}\n\
         space:\n  train.optimizer.lr: {float: [0.001, 0.2], log: true}\n",
    );
    let dir = tmp.path().join("s");
    let out = common::run_ok(fer().args(["sweep"]).arg(&p).arg("--sweep-dir").arg(&dir));
    let err = String::from_utf8_lossy(&out.stderr);
    let trials = rebuild(&read_events(&dir.join("trials.jsonl")).unwrap());
    let searched: Vec<_> = trials.iter().filter(|t| t.repeat_of.is_none()).collect();
    assert_eq!(searched.len(), 3);
    // The median pruner may stop searched trials (the first never); only
    // complete ones are ranked and repeated.
    let complete = searched
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .count();
    let groups = complete.min(2);
    assert_eq!(trials.len(), 3 + 2 * groups, "{trials:?}");
    // The two best searched trials (ties to the earlier), each repeated twice.
    let mut ranked: Vec<(usize, f64)> = searched
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .map(|t| (t.number, t.value.unwrap()))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: Vec<usize> = ranked.iter().take(2).map(|x| x.0).collect();
    for t in trials.iter().filter(|t| t.repeat_of.is_some()) {
        let src = trials
            .iter()
            .find(|s| Some(s.number) == t.repeat_of)
            .unwrap();
        assert!(
            top.contains(&src.number),
            "{t:?} repeats a trial outside the top 2"
        );
        assert_eq!(
            t.params, src.params,
            "a repeat keeps its trial's parameters"
        );
        assert_ne!(t.seed, src.seed, "a repeat has a seed of its own");
        assert_eq!(
            t.state,
            TrialState::Complete,
            "repeats are never pruned: {t:?}"
        );
        assert!(t.number >= 3, "repeats start after the search: {t:?}");
        assert!(
            err.contains(&format!("trial {} repeats trial {}", t.number, src.number)),
            "{err}"
        );
    }
    let summary: fer::sweep::Summary =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary.seed_groups.len(), groups, "{summary:?}");
    let best_group = summary
        .seed_groups
        .iter()
        .max_by(|a, b| a.spread.unwrap().mean.total_cmp(&b.spread.unwrap().mean))
        .unwrap();
    for g in &summary.seed_groups {
        let sp = g.spread.unwrap();
        assert_eq!((g.members.len(), sp.n), (3, 3), "{g:?}");
        let mean = g.values.iter().map(|v| v.1).sum::<f64>() / 3.0;
        assert!((sp.mean - mean).abs() < 1e-12, "{g:?}");
    }
    // The winner: the best mean; its model is its best seed's.
    let best = summary.best.unwrap();
    assert!(best_group.members.contains(&best), "{summary:?}");
    let best_value = best_group
        .values
        .iter()
        .map(|v| v.1)
        .fold(f64::MIN, f64::max);
    assert_eq!(
        best_group.values.iter().find(|v| v.0 == best).unwrap().1,
        best_value
    );
    assert!(
        summary
            .best_rule
            .as_deref()
            .unwrap()
            .contains("best mean val/acc over its seeds"),
        "{summary:?}"
    );
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("Across seeds (val/acc mean"), "{md}");
}

fn load_err(body: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let p = experiment(tmp.path(), body);
    format!("{:#}", Experiment::load(&p, &[]).unwrap_err())
}

#[test]
fn bad_experiments_name_file_line_and_choices() {
    let base = "name: x\ndata: fer2013\ntrain: smoke\n";
    // A typo in a key.
    let e = load_err(&format!("{base}model: cnn\nserch: random\n"));
    assert!(
        e.contains("exp.yaml:5:") && e.contains("serch") && e.contains("search"),
        "{e}"
    );
    // A wrong type, inline.
    let e = load_err(&format!("{base}model: {{kind: cnn, dropout: high}}\n"));
    assert!(e.contains("exp.yaml:4:"), "{e}");
    // An empty search range.
    let e = load_err(&format!(
        "{base}model: cnn\nspace:\n  train.optimizer.lr: {{float: [0.1, 0.01]}}\n"
    ));
    assert!(
        e.contains("space.train.optimizer.lr") && e.contains("empty range"),
        "{e}"
    );
    // An unknown model: as a group name, as a family, and as an inline kind.
    let e = load_err(&format!("{base}model: transformer\n"));
    assert!(e.contains("transformer") && e.contains("resnet18"), "{e}");
    let e = load_err(&format!("{base}space:\n  model: {{transformer: {{}}}}\n"));
    assert!(e.contains("transformer") && e.contains("vit"), "{e}");
    let e = load_err(&format!("{base}model: {{kind: transformer}}\n"));
    assert!(e.contains("exp.yaml:4:") && e.contains("resnet18"), "{e}");
    // An objective metric that is never logged, with the choices.
    let e = load_err(&format!(
        "{base}model: cnn\nsearch: {{objective: {{metric: val/accuracy, direction: maximize}}}}\n"
    ));
    assert!(e.contains("val/accuracy") && e.contains("val/acc"), "{e}");
    // A search parameter path that is not a config key.
    let e = load_err(&format!(
        "{base}model: cnn\nspace:\n  train.learning_rate: {{float: [0.01, 0.1]}}\n"
    ));
    assert!(e.contains("learning_rate"), "{e}");
    // Cross-validated trials are scored on held-out folds: accuracy or macro F1.
    let e = load_err(&format!(
        "{base}model: cnn\ncv: {{folds: 3}}\nsearch: {{objective: {{metric: val/loss, direction: minimize}}}}\n"
    ));
    assert!(
        e.contains("val/loss") && e.contains("val/acc or val/f1_macro"),
        "{e}"
    );
    // A group file that does not exist lists the available ones.
    let e = load_err("name: x\nmodel: cnn\ntrain: fast\n");
    assert!(
        e.contains("fast") && e.contains("quick") && e.contains("smoke"),
        "{e}"
    );
}

/// The YAML files directly in the repository folder `dir`.
fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect()
}

#[test]
fn shipped_experiments_load() {
    let mut names = vec![];
    for p in yaml_files("experiments") {
        let exp = Experiment::load(&p, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
        // The name picks the default sweep folder, runs/<name>/<timestamp>.
        assert_eq!(
            Some(exp.name.as_str()),
            p.file_stem().and_then(|s| s.to_str())
        );
        names.push(exp.name);
    }
    names.sort();
    for want in [
        "smoke",
        "quick",
        "baselines",
        "tune-cnn",
        "release-search",
        "release-search-long",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    let quick = Experiment::load(&repo().join("experiments/quick.yaml"), &[]).unwrap();
    let fams: Vec<&String> = quick.family_models.keys().collect();
    assert_eq!(fams, vec!["cnn", "mlp", "resnet18", "vit"]);
}

#[test]
fn shipped_run_configs_load_and_release_config_matches_the_release_model() {
    let mut n = 0;
    for p in yaml_files("configs") {
        fer::config::RunConfig::load(&p, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
        n += 1;
    }
    assert!(n >= 8, "{n} run configs");
    let cfg = fer::config::RunConfig::load(&repo().join("configs/release.yaml"), &[]).unwrap();
    let meta =
        fer::artifact::ModelMeta::read(&repo().join("models/fer-release.safetensors")).unwrap();
    assert_eq!(meta.name, cfg.name);
    let want = match &cfg.ensemble {
        Some(_) => fer::models::ModelConfig::Ensemble(fer::models::ensemble::EnsembleConfig {
            members: cfg
                .members()
                .unwrap()
                .into_iter()
                .map(|m| m.cfg.model)
                .collect(),
        }),
        None => cfg.model.clone(),
    };
    assert_eq!(meta.model, want);
    assert_eq!(meta.preprocess.size, cfg.data.augment.size);
    assert_eq!(
        (meta.val_fraction, meta.split_seed),
        (cfg.data.val_fraction, cfg.data.split_seed)
    );
}

fn trial_numbers(events: &[Event], started: bool) -> Vec<usize> {
    let mut v: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::TrialStarted { trial, .. } if started => Some(*trial),
            Event::TrialFinished { trial, .. } if !started => Some(*trial),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[test]
fn two_workers_run_each_trial_once_with_one_workers_bookkeeping() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = repo().join("experiments/smoke.yaml");
    let run = |dir: &Path, workers: &str| {
        let out = fer()
            .arg("sweep")
            .arg(&exp)
            .arg("--sweep-dir")
            .arg(dir)
            .args(["--workers", workers, "--set", "search.n_trials=6", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        summary
    };
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let s1 = run(&one, "1");
    let s2 = run(&two, "2");
    let events = read_events(&two.join("trials.jsonl")).unwrap();
    assert_eq!(trial_numbers(&events, true), (0..6).collect::<Vec<_>>());
    assert_eq!(trial_numbers(&events, false), (0..6).collect::<Vec<_>>());
    let trials = rebuild(&events);
    let mut by_worker = std::collections::BTreeMap::new();
    for t in &trials {
        let w = t.worker.as_ref().expect("each trial names its worker");
        assert!(w.pid > 0 && !w.host.is_empty());
        *by_worker.entry(w.name.clone()).or_insert(0) += 1;
    }
    assert_eq!(
        by_worker.keys().collect::<Vec<_>>(),
        ["w1", "w2"],
        "{by_worker:?}"
    );
    // The same bookkeeping as one worker: trials, states, epochs per trial.
    let book = |s: &serde_json::Value| -> Vec<(u64, String, usize)> {
        s["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["number"].as_u64().unwrap(),
                    t["state"].as_str().unwrap().to_string(),
                    t["intermediate"].as_array().unwrap().len(),
                )
            })
            .collect()
    };
    assert_eq!(book(&s1), book(&s2));
    assert!(s2["best"].is_u64() && two.join("best-model.safetensors").exists());
    // --status names both workers and their counts.
    let out = fer()
        .arg("sweep")
        .arg("--status")
        .arg(&two)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("6 of 6 trials started; complete 6"),
        "{status}"
    );
    assert!(
        status.contains("| w1 |") && status.contains("| w2 |"),
        "{status}"
    );
}

#[test]
fn a_worker_killed_mid_trial_is_taken_over_from_its_checkpoint_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sweep");
    let parent = fer()
        .arg("sweep")
        .arg(repo().join("experiments/smoke.yaml"))
        .arg("--sweep-dir")
        .arg(&dir)
        .args([
            "--workers",
            "2",
            "--set",
            "search.n_trials=3",
            "--set",
            "train.epochs=4",
        ])
        .args([
            "--set",
            "search.heartbeat_seconds=0.5",
            "--set",
            "search.stale_after_seconds=2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first trial to have a checkpoint of epoch 1: kill its worker.
    let journal = dir.join("trials.jsonl");
    let t0 = Instant::now();
    let (victim, worker) = loop {
        let trials = rebuild(&read_events(&journal).unwrap_or_default());
        let ready = trials.iter().find(|t| {
            t.state == TrialState::Running
                && t.intermediate.len() == 1
                && dir
                    .join(format!(
                        "trials/{:03}/checkpoints/last.safetensors",
                        t.number
                    ))
                    .exists()
        });
        if let Some(t) = ready {
            break (t.number, t.worker.clone().unwrap());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no trial reached epoch 1"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    unsafe { libc::kill(worker.pid as i32, libc::SIGKILL) };
    let metrics = dir.join(format!("trials/{victim:03}/metrics.jsonl"));
    let first_epoch = std::fs::read_to_string(&metrics).unwrap();
    let out = parent.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // The sweep completed; the parent says which worker died.
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("{} ended", worker.name)), "{err}");
    let events = read_events(&journal).unwrap();
    let stale: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::TrialStale { trial, .. } => Some(*trial),
            _ => None,
        })
        .collect();
    assert_eq!(stale, vec![victim], "marked stale once");
    let claims: Vec<&fer::sweep::journal::Worker> = events
        .iter()
        .filter_map(|e| match e {
            Event::TrialClaimed { trial, worker, .. } if *trial == victim => Some(worker),
            _ => None,
        })
        .collect();
    assert_eq!(claims.len(), 1, "taken over once");
    assert_ne!(claims[0].pid, worker.pid, "by another worker");
    assert_eq!(trial_numbers(&events, true), vec![0, 1, 2]);
    assert_eq!(
        trial_numbers(&events, false),
        vec![0, 1, 2],
        "each finished once"
    );
    let trials = rebuild(&events);
    assert!(
        trials.iter().all(|t| t.state == TrialState::Complete),
        "{trials:?}"
    );
    assert_eq!(trials[victim].takeovers, 1);
    // From its checkpoint: epoch 1 as the killed worker wrote it, then 2-4.
    let after = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(after.lines().count(), 4, "{after}");
    // Epoch 1 was not trained again: the record keeps its original time.
    let first = |text: &str| -> (u64, f64) {
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        (v["epoch"].as_u64().unwrap(), v["time"].as_f64().unwrap())
    };
    assert_eq!(first(&after), first(&first_epoch));
}

/// A one-node Slurm for one test (`scripts/slurm-local.sh`), stopped when
/// dropped, also on a failed assert.
struct Slurm {
    dir: PathBuf,
    conf: String,
}

impl Slurm {
    fn up(dir: &Path) -> Slurm {
        let out = std::process::Command::new(repo().join("scripts/slurm-local.sh"))
            .arg("up")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "starting Slurm: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Slurm {
            dir: dir.to_path_buf(),
            conf: String::from_utf8(out.stdout).unwrap().trim().to_string(),
        }
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo().join("scripts/slurm-local.sh"))
            .arg("down")
            .arg(&self.dir)
            .output();
    }
}

#[test]
fn a_real_slurm_runs_a_smoke_sweep_as_a_two_task_array() {
    let tmp = tempfile::tempdir().unwrap();
    let slurm = Slurm::up(&tmp.path().join("cluster"));
    let dir = tmp.path().join("sweep");
    let out = fer()
        .arg("sweep")
        .arg(repo().join("experiments/smoke.yaml"))
        .arg("--sweep-dir")
        .arg(&dir)
        .args(["--launcher", "slurm", "--array", "2", "--wait"])
        .args(["--set", "search.n_trials=4"])
        .env("SLURM_CONF", &slurm.conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let script = std::fs::read_to_string(dir.join("slurm/sweep.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-1"), "{script}");
    let job = std::fs::read_to_string(dir.join("slurm/jobs.txt")).unwrap();
    let job = job.trim();
    assert!(err.contains(&format!("Slurm job {job}")), "{err}");
    let events = read_events(&dir.join("trials.jsonl")).unwrap();
    assert_eq!(trial_numbers(&events, true), vec![0, 1, 2, 3]);
    assert_eq!(trial_numbers(&events, false), vec![0, 1, 2, 3]);
    for t in rebuild(&events) {
        assert_eq!(t.state, TrialState::Complete, "{t:?}");
        // Run by an array task of that job.
        let task = t.worker.unwrap().slurm.unwrap();
        assert!(
            task == format!("{job}_0") || task == format!("{job}_1"),
            "{task}"
        );
    }
    let status = fer()
        .arg("sweep")
        .arg("--status")
        .arg(&dir)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains(&format!("Slurm jobs: {job}")), "{status}");
    assert!(status.contains("complete 4"), "{status}");
}

/// The pids whose parent is `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == parent {
            out.push(pid);
        }
    }
    out
}

/// Alive and not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s[s.rfind(')').unwrap() + 2..].chars().next();
            state != Some('Z') && state != Some('X')
        })
        .unwrap_or(false)
}

/// Nothing `fer sweep --workers 2` starts outlives it: a TERM, and then
/// (another sweep) a KILL that runs no handler, to the parent ends both
/// workers within seconds.
#[test]
fn workers_end_with_their_parent_whatever_the_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = repo().join("experiments/smoke.yaml");
    for (i, sig) in [libc::SIGTERM, libc::SIGKILL].into_iter().enumerate() {
        let dir = tmp.path().join(format!("s{i}"));
        let mut parent = fer()
            .arg("sweep")
            .arg(&exp)
            .arg("--sweep-dir")
            .arg(&dir)
            .args(["--workers", "2", "--set", "search.n_trials=40"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        let workers = loop {
            let kids = children_of(parent.id());
            if kids.len() == 2 {
                break kids;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "workers never started"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // SAFETY: signals our own child.
        unsafe { libc::kill(parent.id() as i32, sig) };
        parent.wait().unwrap();
        let t = Instant::now();
        while workers.iter().any(|&w| running(w)) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "signal {sig}: workers {workers:?} outlived their parent"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A sweep is one experiment: `--join` and `--resume` refuse a
/// `config.yaml` edited after the sweep started, naming the key; a Slurm
/// launch refused for a bad option writes no folder.
#[test]
fn a_sweep_refuses_an_edited_config_and_a_refused_launch_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = repo().join("experiments/smoke.yaml");
    let dir = tmp.path().join("s");
    common::run_ok(
        fer()
            .arg("sweep")
            .arg(&exp)
            .arg("--sweep-dir")
            .arg(&dir)
            .args(["--set", "search.n_trials=1"]),
    );
    let config = dir.join("config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("seed: 1\n"), "{text}");
    std::fs::write(&config, text.replace("seed: 1\n", "seed: 7\n")).unwrap();
    let join = fer().args(["sweep", "--join"]).arg(&dir).output().unwrap();
    let resume = fer()
        .arg("sweep")
        .arg(&exp)
        .args(["--resume", "--sweep-dir"])
        .arg(&dir)
        .args(["--set", "search.n_trials=2"])
        .output()
        .unwrap();
    for (what, o) in [("join", join), ("resume", resume)] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: {err}");
        assert!(
            err.contains("was edited after the sweep started"),
            "{what}: {err}"
        );
        assert!(err.contains("seed: 1 recorded, 7 now"), "{what}: {err}");
    }
    let trials = rebuild(&read_events(&dir.join("trials.jsonl")).unwrap());
    assert_eq!(trials.len(), 1, "no trial ran under the edited config");

    // A refused Slurm option: no folder.
    let slurm = tmp.path().join("slurm");
    let o = fer()
        .arg("sweep")
        .arg(&exp)
        .arg("--sweep-dir")
        .arg(&slurm)
        .args(["--launcher", "slurm", "--partition", "two words"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("--partition \"two words\": expected one word"),
        "{err}"
    );
    assert!(
        !slurm.exists(),
        "a refused launch wrote {}",
        slurm.display()
    );
}
