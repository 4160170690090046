//! One writer per folder. A process that works on a run (or a sweep's trial)
//! holds an advisory lock on the folder's `.lock` file for as long as it
//! works; the file names the holder (pid, host, start, command) so that a
//! second process is refused with that name. The lock is the OS's (`flock`,
//! which Linux's NFS client maps to NFS byte-range locks), so a holder that
//! dies, even by `kill -9`, releases it: the next process takes the folder
//! over and says whose lock it found. A trial is the unit that is locked,
//! not the sweep: several processes may share one sweep, each on its own
//! trials. Files that several processes append to (a sweep's journal) use
//! [`FileMutex`] instead, a lock that holds on NFS without a lock manager.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Who holds (or last held) a folder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// Unix time (s) the lock was taken.
    pub since: f64,
    pub command: String,
}

impl Holder {
    fn here() -> Holder {
        Holder {
            pid: std::process::id(),
            host: crate::provenance::hostname(),
            since: crate::layout::unix_now(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ago = (crate::layout::unix_now() - self.since).max(0.0);
        write!(
            f,
            "pid {} on host {} (for {:.0} s: `{}`)",
            self.pid, self.host, ago, self.command
        )
    }
}

/// Folders this process holds: a nested acquire (a sweep that claimed a
/// trial, then trains it) is granted without a second OS lock, which would
/// conflict with the first even within one process.
static HELD: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// A held folder; dropping it removes the lock file and releases the lock.
#[derive(Debug)]
pub struct FolderLock {
    /// None for a nested acquire, which releases nothing.
    held: Option<(File, PathBuf, PathBuf)>,
}

/// Holds `dir` (created if missing) for this process, or says who does.
pub fn acquire(dir: &Path) -> Result<FolderLock> {
    match try_acquire(dir)? {
        Ok(lock) => Ok(lock),
        Err(holder) => anyhow::bail!(
            "{} is in use by {holder}; wait for it to finish, or stop that process (a lock left by a process that has died is taken over without asking)",
            dir.display()
        ),
    }
}

/// As `acquire`, but a folder held by another process is `Ok(Err(holder))`.
pub fn try_acquire(dir: &Path) -> Result<std::result::Result<FolderLock, Holder>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if held.get_or_insert_with(HashSet::new).contains(&key) {
            return Ok(Ok(FolderLock { held: None }));
        }
    }
    let path = dir.join(crate::layout::LOCK);
    loop {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(Err(read_holder(&mut file))),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        // The previous holder removes the file before it lets go: a lock won
        // on a file no longer at `path` is worthless, so start again.
        let same = std::fs::metadata(&path)
            .ok()
            .zip(file.metadata().ok())
            .is_some_and(|(a, b)| a.dev() == b.dev() && a.ino() == b.ino());
        if !same {
            continue;
        }
        let previous = read_holder(&mut file);
        if previous.pid != 0 {
            eprintln!(
                "note: {} was left locked by {previous}, which has ended; taking it over",
                dir.display()
            );
        }
        let me = serde_json::to_vec_pretty(&Holder::here())?;
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(&me))
            .and_then(|_| file.flush())
            .with_context(|| format!("writing {}", path.display()))?;
        HELD.lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashSet::new)
            .insert(key.clone());
        return Ok(Ok(FolderLock {
            held: Some((file, path, key)),
        }));
    }
}

/// The holder named in a lock file (a default one if it cannot be read).
fn read_holder(file: &mut File) -> Holder {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    serde_json::from_str(&text).unwrap_or_default()
}

/// The holder of `dir`'s lock if a live process holds it now.
pub fn holder(dir: &Path) -> Option<Holder> {
    let path = dir.join(crate::layout::LOCK);
    let mut file = File::open(&path).ok()?;
    match file.try_lock_shared() {
        Err(TryLockError::WouldBlock) => Some(read_holder(&mut file)),
        _ => None,
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        if let Some((file, path, key)) = self.held.take() {
            // Removed while still locked (see the inode check above).
            let _ = std::fs::remove_file(&path);
            drop(file);
            if let Some(h) = HELD.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                h.remove(&key);
            }
        }
    }
}

/// An exclusive lock for the moments a shared file is read and appended,
/// that works on NFS as on a local disk: the lock is the atomic creation of
/// `<file>.lock` (`O_CREAT | O_EXCL`, atomic on NFS since v3), as in
/// Optuna's `JournalFileOpenLock`; `flock` is not used because NFS clients
/// without a lock manager accept it silently. A holder killed while holding
/// it leaves the file behind: one older than `grace` is broken (renamed away
/// first, so two waiters cannot both break it and then both take it).
pub struct FileMutex {
    path: PathBuf,
    grace: std::time::Duration,
}

/// A held [`FileMutex`]; dropping it removes the lock file.
#[derive(Debug)]
pub struct FileMutexGuard {
    path: PathBuf,
}

impl FileMutex {
    /// The lock of `file` (a `.lock` suffix is added to its name).
    pub fn for_file(file: &Path, grace: std::time::Duration) -> FileMutex {
        let mut name = file.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        FileMutex {
            path: file.with_file_name(name),
            grace,
        }
    }

    /// Waits for the lock (polling with a growing pause up to 20 ms), for at
    /// most `wait`; then fails naming the file and its holder.
    pub fn lock(&self, wait: std::time::Duration) -> Result<FileMutexGuard> {
        let start = std::time::Instant::now();
        let mut pause = std::time::Duration::from_micros(200);
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.path)
            {
                Ok(mut f) => {
                    // The holder's name is for people; the lock is the file.
                    let _ = f.write_all(&serde_json::to_vec(&Holder::here())?);
                    return Ok(FileMutexGuard {
                        path: self.path.clone(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", self.path.display()))
                }
            }
            self.break_if_abandoned();
            if start.elapsed() > wait {
                let mut holder = Holder::default();
                if let Ok(mut f) = File::open(&self.path) {
                    holder = read_holder(&mut f);
                }
                let state = match holder_state(&holder) {
                    Some(HolderState::Stopped) => format!(
                        "; that process is stopped (SIGSTOP or Ctrl-Z), not dead: `kill -CONT {}` lets it go on and release the lock",
                        holder.pid
                    ),
                    Some(HolderState::Running) => "; that process is alive".to_string(),
                    None => "; if that process is gone, remove the file".to_string(),
                };
                anyhow::bail!(
                    "{} has been held for over {:.0} s by {holder}{state}",
                    self.path.display(),
                    wait.as_secs_f64()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(20));
        }
    }

    /// Removes a lock file older than the grace period whose holder died
    /// between taking and releasing it. A holder on this machine that is
    /// alive (a stopped one too) keeps it: once continued it would write
    /// again. A holder on another machine cannot be checked: age decides.
    fn break_if_abandoned(&self) {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return;
        };
        if let Ok(mut f) = File::open(&self.path) {
            if holder_state(&read_holder(&mut f)).is_some() {
                return;
            }
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| std::time::SystemTime::now().duration_since(m).ok());
        if age.is_some_and(|a| a > self.grace) {
            let aside = self.path.with_extension(format!(
                "lock.broken-{}-{}",
                std::process::id(),
                crate::layout::unix_now()
            ));
            if std::fs::rename(&self.path, &aside).is_ok() {
                eprintln!(
                    "note: {} was older than {:.0} s (its holder died holding it); broken",
                    self.path.display(),
                    self.grace.as_secs_f64()
                );
                let _ = std::fs::remove_file(&aside);
            }
        }
    }
}

/// A lock holder on this machine that is still there.
#[derive(Debug, PartialEq)]
enum HolderState {
    Running,
    /// Stopped by a signal (state T in /proc): alive, not dead.
    Stopped,
}

/// What this machine can tell of `h`: None when it is on another machine,
/// names no process, or its process is gone.
fn holder_state(h: &Holder) -> Option<HolderState> {
    let Ok(pid) = i32::try_from(h.pid) else {
        return None;
    };
    // SAFETY: signal 0 checks existence only; EPERM means another user's.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if pid == 0 || h.host != crate::provenance::hostname() || !alive {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", h.pid)).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next());
    match state {
        // A zombie (killed, not yet reaped by its parent) or a dying
        // process will never release the lock: it is dead for this purpose,
        // and its parent may itself be waiting on the lock's next holder.
        Some('Z') | Some('X') | Some('x') => None,
        Some('T') | Some('t') => Some(HolderState::Stopped),
        _ => Some(HolderState::Running),
    }
}

impl Drop for FileMutexGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_folder_is_refused_with_its_holder_then_free_again() {
        let t = tempfile::tempdir().unwrap();
        let lock = acquire(t.path()).unwrap();
        assert_eq!(holder(t.path()).unwrap().pid, std::process::id());
        // Another open file description conflicts, as another process would.
        let mut other = File::open(t.path().join(crate::layout::LOCK)).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        assert_eq!(read_holder(&mut other).host, crate::provenance::hostname());
        // A nested acquire in this process is granted and releases nothing.
        drop(acquire(t.path()).unwrap());
        assert!(holder(t.path()).is_some());
        drop(lock);
        assert!(!t.path().join(crate::layout::LOCK).exists());
        assert!(holder(t.path()).is_none());
        drop(acquire(t.path()).unwrap());
    }

    #[test]
    fn a_lock_file_nobody_holds_is_taken_over() {
        let t = tempfile::tempdir().unwrap();
        let dead = Holder {
            pid: 999_999,
            host: "elsewhere".into(),
            since: 0.0,
            command: "fer train".into(),
        };
        std::fs::write(
            t.path().join(crate::layout::LOCK),
            serde_json::to_vec(&dead).unwrap(),
        )
        .unwrap();
        assert!(holder(t.path()).is_none());
        let lock = acquire(t.path()).unwrap();
        assert_eq!(holder(t.path()).unwrap().pid, std::process::id());
        drop(lock);
    }

    #[test]
    fn a_file_mutex_excludes_names_its_holder_and_is_broken_when_abandoned() {
        use std::time::Duration;
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("trials.jsonl");
        let m = FileMutex::for_file(&file, Duration::from_secs(3600));
        let held = m.lock(Duration::from_secs(1)).unwrap();
        assert!(t.path().join("trials.jsonl.lock").exists());
        let e = m.lock(Duration::from_millis(50)).unwrap_err().to_string();
        assert!(
            e.contains("trials.jsonl.lock") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(held);
        assert!(!t.path().join("trials.jsonl.lock").exists());
        // A lock file left by a dead holder, older than the grace period.
        let m = FileMutex::for_file(&file, Duration::from_millis(100));
        std::fs::write(t.path().join("trials.jsonl.lock"), "{}").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(m.lock(Duration::from_secs(5)).unwrap());
        let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_stopped_holder_keeps_its_lock_and_is_named_as_stopped() {
        use std::time::Duration;
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("trials.jsonl");
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // SAFETY: stops our own child.
        unsafe { libc::kill(sleeper.id() as i32, libc::SIGSTOP) };
        let holder = Holder {
            pid: sleeper.id(),
            host: crate::provenance::hostname(),
            since: 0.0,
            command: "sleep 30".into(),
        };
        let lock = t.path().join("trials.jsonl.lock");
        std::fs::write(&lock, serde_json::to_vec(&holder).unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // Older than the grace period, yet its holder is alive: kept.
        let m = FileMutex::for_file(&file, Duration::from_millis(100));
        let e = m.lock(Duration::from_millis(300)).unwrap_err().to_string();
        assert!(lock.exists(), "a live holder's lock was broken");
        assert!(
            e.contains("stopped (SIGSTOP or Ctrl-Z), not dead")
                && e.contains(&format!("kill -CONT {}", sleeper.id())),
            "{e}"
        );
        // Killed but not yet reaped (a zombie, as a sweep worker is until
        // its parent waits on it): dead, so the lock is broken by age.
        let _ = sleeper.kill();
        drop(m.lock(Duration::from_secs(5)).unwrap());
        let _ = sleeper.wait();
    }
}
