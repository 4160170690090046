//! `fer mlflow up|down`: a local MLflow server from the project's `.venv`,
//! with a sqlite backend and the artifact proxy under `runs/mlflow/`,
//! bound to 127.0.0.1.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerInfo {
    pub pid: u32,
    pub host: String,
    pub port: u16,
    pub uri: String,
    pub dir: PathBuf,
}

fn info_path(dir: &Path) -> PathBuf {
    dir.join("server.json")
}

/// The `mlflow` executable: `$FER_MLFLOW`, else the `.venv` of the active
/// virtual environment or of the working folder, else `mlflow` on PATH.
pub fn mlflow_exe() -> PathBuf {
    if let Some(p) = std::env::var_os("FER_MLFLOW") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".venv"));
    let p = venv.join("bin/mlflow");
    if p.exists() {
        // Absolute: the server starts in its own folder, where a relative
        // `.venv/bin/mlflow` would name nothing.
        std::path::absolute(&p).unwrap_or(p)
    } else {
        PathBuf::from("mlflow")
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

pub struct UpArgs<'a> {
    pub dir: &'a Path,
    pub host: &'a str,
    pub port: u16,
    pub wait: Duration,
    /// MLflow's basic-auth app: users and permissions, admin password from
    /// `MLFLOW_AUTH_ADMIN_PASSWORD`.
    pub basic_auth: bool,
}

/// Starts the server in the background (its own process group, output in
/// `server.log`) and waits for `/health`.
pub fn up(a: &UpArgs) -> Result<ServerInfo> {
    match start(a)? {
        Starting::Running(info) => {
            eprintln!("mlflow: already running at {} (pid {})", info.uri, info.pid);
            Ok(info)
        }
        s => s.wait(a.wait),
    }
}

/// A server that `start` found or launched.
pub enum Starting {
    /// Already up (started earlier, e.g. by `fer mlflow up`).
    Running(ServerInfo),
    /// Launched by this process; not answering yet.
    Launched(ServerInfo, std::process::Child),
}

impl Starting {
    pub fn info(&self) -> &ServerInfo {
        match self {
            Starting::Running(i) | Starting::Launched(i, _) => i,
        }
    }

    /// Waits until the server answers `/health`; stops it if it does not
    /// within `wait`.
    pub fn wait(self, wait: Duration) -> Result<ServerInfo> {
        let (info, mut child) = match self {
            Starting::Running(info) => return Ok(info),
            Starting::Launched(info, child) => (info, child),
        };
        let client = super::client::Client::with_auth(&info.uri, None)?;
        let t = Instant::now();
        while t.elapsed() < wait {
            if let Some(status) = child.try_wait()? {
                let _ = std::fs::remove_file(info_path(&info.dir));
                bail!(
                    "mlflow server exited with {status} before answering; see {}",
                    info.dir.join("server.log").display()
                );
            }
            if client.healthy() && child.try_wait()?.is_none() {
                eprintln!(
                    "mlflow: up at {} after {:.0} s (pid {}, data in {})",
                    info.uri,
                    t.elapsed().as_secs_f64(),
                    info.pid,
                    info.dir.display()
                );
                return Ok(info);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        stop_group(info.pid);
        let _ = std::fs::remove_file(info_path(&info.dir));
        bail!(
            "mlflow server did not answer /health within {} s; see {}",
            wait.as_secs(),
            info.dir.join("server.log").display()
        )
    }
}

/// The server recorded in `a.dir` if it is alive, else a new one launched
/// (without waiting for it to answer).
pub fn start(a: &UpArgs) -> Result<Starting> {
    if let Some(info) = running(a.dir) {
        return Ok(Starting::Running(info));
    }
    // Another program on the port would answer (or not) in the server's
    // place: name it as such before launching anything.
    if let Err(e) = std::net::TcpListener::bind((a.host, a.port)) {
        bail!(
            "{}:{} is in use by another program ({e}), not by an MLflow server of {}; stop it or choose another port",
            a.host,
            a.port,
            a.dir.display()
        );
    }
    std::fs::create_dir_all(a.dir.join("artifacts"))
        .with_context(|| format!("creating {}", a.dir.display()))?;
    let dir = std::fs::canonicalize(a.dir)?;
    let log = std::fs::File::create(dir.join("server.log"))
        .with_context(|| format!("creating {}", dir.join("server.log").display()))?;
    let exe = mlflow_exe();
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["server", "--host", a.host, "--port", &a.port.to_string()])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--serve-artifacts")
        .arg("--artifacts-destination")
        .arg(dir.join("artifacts"))
        // One worker and no job runner: 2 processes and ~35 s to start on
        // 2 cores instead of ~15 processes and 2-3 minutes.
        .args(["--workers", "1"])
        .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        .current_dir(&dir);
    if a.basic_auth {
        if std::env::var("MLFLOW_AUTH_ADMIN_PASSWORD").map_or(true, |p| p.is_empty()) {
            bail!("--basic-auth needs MLFLOW_AUTH_ADMIN_PASSWORD: the admin password to create on first start");
        }
        cmd.args(["--app-name", "basic-auth"]);
        if std::env::var_os("MLFLOW_FLASK_SERVER_SECRET_KEY").is_none() {
            cmd.env(
                "MLFLOW_FLASK_SERVER_SECRET_KEY",
                format!("{:032x}", rand::random::<u128>()),
            );
        }
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let child = cmd.spawn().with_context(|| {
        format!(
            "starting {} (run `make setup` to install mlflow into .venv, or set FER_MLFLOW)",
            exe.display()
        )
    })?;
    let info = ServerInfo {
        pid: child.id(),
        host: a.host.into(),
        port: a.port,
        uri: format!("http://{}:{}", a.host, a.port),
        dir: dir.clone(),
    };
    crate::layout::write_atomic(&info_path(&dir), &serde_json::to_vec_pretty(&info)?)?;
    Ok(Starting::Launched(info, child))
}

/// The server recorded in `dir`, if its process is still alive.
pub fn running(dir: &Path) -> Option<ServerInfo> {
    let info: ServerInfo = serde_json::from_slice(&std::fs::read(info_path(dir)).ok()?).ok()?;
    alive(info.pid).then_some(info)
}

fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    // SAFETY: signal 0 only checks that the process exists.
    unsafe {
        libc::kill(pid as i32, 0) == 0
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

/// Ties a launched server to process `parent`: a watchdog in its own
/// process group (so a terminal's Ctrl-C does not reach it) polls `parent`
/// each second and stops the server's group once `parent` is gone, however
/// it ended, SIGKILL included. It ends by itself either way.
pub fn tie_to(parent: u32, server: &ServerInfo) -> Result<()> {
    let script = "while kill -0 \"$0\" 2>/dev/null; do sleep 1; done; \
                  kill -TERM -- -\"$1\" 2>/dev/null || exit 0; sleep 10; kill -KILL -- -\"$1\" 2>/dev/null; exit 0";
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", script, &parent.to_string(), &server.pid.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    cmd.spawn()
        .context("starting the MLflow server's watchdog")?;
    Ok(())
}

/// SIGTERM to the server's whole process group (uvicorn workers included),
/// then SIGKILL after 10 s.
fn stop_group(pid: u32) {
    #[cfg(unix)]
    // SAFETY: kill with a negative pid signals the group we created.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if libc::kill(-(pid as i32), 0) != 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

/// Stops the server recorded in `dir`. Returns false when none was running.
pub fn down(dir: &Path) -> Result<bool> {
    let Some(info) = running(dir) else {
        let _ = std::fs::remove_file(info_path(dir));
        return Ok(false);
    };
    stop_group(info.pid);
    // Reap it when it is our child (tests start and stop in one process).
    #[cfg(unix)]
    // SAFETY: waitpid on a pid that may not be our child just fails.
    unsafe {
        libc::waitpid(info.pid as i32, std::ptr::null_mut(), libc::WNOHANG);
    }
    std::fs::remove_file(info_path(dir)).ok();
    Ok(true)
}
