//! Slurm as the engine beyond one machine: `fer sweep --launcher slurm`
//! writes a readable sbatch script into the sweep folder (a job array whose
//! tasks each run `fer sweep --join` on the folder) and submits it. The
//! folder, the `fer` binary and the data must be on storage every node
//! sees; the journal's lock is safe on NFS. Job ids are kept in
//! `slurm/jobs.txt` for `fer sweep --status`.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the sbatch script asks Slurm for.
#[derive(Clone, Debug, Default)]
pub struct SlurmOptions {
    /// Array tasks, each one worker.
    pub array: u32,
    pub partition: Option<String>,
    /// Time limit per task, in any form sbatch takes (`2:00:00`).
    pub time: Option<String>,
    pub cpus_per_task: u32,
    pub gpus_per_task: Option<u32>,
    /// More `#SBATCH` lines, verbatim (`--mem=8G`, `--account=lab`).
    pub extra: Vec<String>,
    /// MLflow server every task logs to.
    pub tracking_uri: Option<String>,
}

/// The folder of Slurm files in a sweep.
pub fn slurm_dir(sweep: &Path) -> PathBuf {
    sweep.join("slurm")
}

/// Slurm job ids submitted for this sweep, oldest first.
pub fn jobs(sweep: &Path) -> Vec<String> {
    std::fs::read_to_string(slurm_dir(sweep).join("jobs.txt"))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The sbatch script for the sweep in `sweep` (absolute paths: tasks start
/// in Slurm's working directory, on another node).
pub fn script(
    name: &str,
    sweep: &Path,
    fer: &Path,
    data: &Path,
    o: &SlurmOptions,
) -> Result<String> {
    if o.array == 0 {
        bail!("--array must be at least 1 (one worker per array task)");
    }
    for (what, v) in [("--partition", &o.partition), ("--time", &o.time)] {
        if v.as_deref()
            .is_some_and(|v| v.is_empty() || v.contains(char::is_whitespace))
        {
            bail!("{what} {:?}: expected one word", v.as_deref().unwrap_or(""));
        }
    }
    let abs = |p: &Path| -> Result<String> {
        let a = std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?;
        let s = a.to_string_lossy().into_owned();
        if s.contains(['\'', '\n']) {
            bail!("{s}: a path with a quote or newline cannot go into an sbatch script");
        }
        Ok(s)
    };
    let (sweep, fer, data) = (abs(sweep)?, abs(fer)?, abs(data)?);
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/bash");
    let _ = writeln!(
        s,
        "# Written by `fer sweep --launcher slurm` for the sweep in {sweep}.\n\
         # Each array task joins the sweep as one worker (`fer sweep --join`);\n\
         # the journal in the folder hands out trials, so tasks may start, end\n\
         # or die in any order. Submit it again (`sbatch {sweep}/slurm/sweep.sbatch`)\n\
         # to add workers to an unfinished sweep; `fer sweep --status {sweep}`\n\
         # shows trials by worker."
    );
    let _ = writeln!(s, "#SBATCH --job-name=fer-{}", sanitize(name));
    let _ = writeln!(s, "#SBATCH --array=0-{}", o.array - 1);
    let _ = writeln!(s, "#SBATCH --ntasks=1");
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", o.cpus_per_task.max(1));
    if let Some(p) = &o.partition {
        let _ = writeln!(s, "#SBATCH --partition={p}");
    }
    if let Some(t) = &o.time {
        let _ = writeln!(s, "#SBATCH --time={t}");
    }
    if let Some(g) = o.gpus_per_task {
        let _ = writeln!(s, "#SBATCH --gpus-per-task={g}");
    }
    for e in &o.extra {
        if e.contains('\n') {
            bail!("--sbatch-arg {e:?}: one line expected");
        }
        let _ = writeln!(s, "#SBATCH {e}");
    }
    let _ = writeln!(s, "#SBATCH --output={sweep}/slurm/%A_%a.out");
    let _ = writeln!(s);
    let _ = writeln!(s, "set -euo pipefail");
    let _ = writeln!(
        s,
        "# libtorch uses the GPU Slurm gives the task when it sees one (train.device: auto)."
    );
    let _ = writeln!(s, "export FER_THREADS=\"${{SLURM_CPUS_PER_TASK:-1}}\"");
    let mut cmd = format!(
        "exec '{fer}' sweep --join '{sweep}' --data '{data}' \\\n  --worker-name \"slurm-${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\""
    );
    if let Some(u) = &o.tracking_uri {
        if u.contains(['\'', '\n']) {
            bail!("--tracking-uri {u:?}: a quote or newline cannot go into an sbatch script");
        }
        let _ = write!(cmd, " \\\n  --tracking-uri '{u}'");
    }
    let _ = writeln!(s, "{cmd}");
    Ok(s)
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Writes the script into `sweep/slurm/sweep.sbatch` and submits it with
/// `sbatch --parsable` (with `--wait`, until every task has ended). Returns
/// the job id.
pub fn submit(sweep: &Path, script: &str, wait: bool) -> Result<String> {
    let dir = slurm_dir(sweep);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("sweep.sbatch");
    crate::layout::write_atomic(&path, script.as_bytes())?;
    let mut cmd = std::process::Command::new("sbatch");
    cmd.arg("--parsable");
    if wait {
        cmd.arg("--wait");
    }
    cmd.arg(&path);
    let out = cmd.output().map_err(|e| {
        anyhow::anyhow!(
            "running sbatch: {e} (is Slurm installed here? the script is written: {})",
            path.display()
        )
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // `--parsable` prints `jobid[;cluster]`; with --wait the id comes first.
    let id = stdout
        .lines()
        .next()
        .and_then(|l| l.split(';').next())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string);
    if let Some(id) = &id {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("jobs.txt"))?;
        std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes())?;
    }
    match (id, out.status.success()) {
        (Some(id), true) => Ok(id),
        (id, _) => bail!(
            "sbatch {} {}: {}{}",
            path.display(),
            if id.is_some() {
                "ran, but a task failed"
            } else {
                "failed"
            },
            String::from_utf8_lossy(&out.stderr).trim(),
            id.map_or(String::new(), |i| format!(
                " (job {i}; task logs in {})",
                dir.display()
            ))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_an_array_of_joins_with_what_was_asked() {
        let o = SlurmOptions {
            array: 4,
            partition: Some("gpu".into()),
            time: Some("2:00:00".into()),
            cpus_per_task: 8,
            gpus_per_task: Some(1),
            extra: vec!["--mem=16G".into()],
            tracking_uri: Some("http://mlflow.lab:5000".into()),
        };
        let s = script(
            "zoo cnn",
            Path::new("/shared/runs/zoo"),
            Path::new("/shared/fer"),
            Path::new("/data/fer2013"),
            &o,
        )
        .unwrap();
        for line in [
            "#SBATCH --job-name=fer-zoo-cnn",
            "#SBATCH --array=0-3",
            "#SBATCH --cpus-per-task=8",
            "#SBATCH --partition=gpu",
            "#SBATCH --time=2:00:00",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --mem=16G",
            "#SBATCH --output=/shared/runs/zoo/slurm/%A_%a.out",
            "exec '/shared/fer' sweep --join '/shared/runs/zoo' --data '/data/fer2013' \\",
            "  --tracking-uri 'http://mlflow.lab:5000'",
        ] {
            assert!(s.lines().any(|l| l == line), "no line {line:?} in\n{s}");
        }
        let bad = SlurmOptions {
            time: Some("2 hours".into()),
            ..o.clone()
        };
        let e = script("x", Path::new("/s"), Path::new("/f"), Path::new("/d"), &bad).unwrap_err();
        assert!(e.to_string().contains("--time"), "{e}");
        let none = SlurmOptions { array: 0, ..o };
        assert!(script(
            "x",
            Path::new("/s"),
            Path::new("/f"),
            Path::new("/d"),
            &none
        )
        .is_err());
    }
}
