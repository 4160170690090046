//! Video files in and out through the `ffmpeg` and `ffprobe` programs
//! (Debian's ffmpeg package): `ffprobe` reads the stream's size, exact
//! frame rate and declared length; `ffmpeg` decodes every frame, without
//! dropping or duplicating any, to RGB on a pipe (through ffmpeg-sidecar,
//! which also parses ffmpeg's log for errors), and encodes annotated frames
//! to H.264 MP4 at the input's rate, so the output keeps the frame count.

use anyhow::{bail, Context, Result};
use ffmpeg_sidecar::command::FfmpegCommand;
use ffmpeg_sidecar::event::{FfmpegEvent, LogLevel};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What ffprobe says of a file's first video stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    pub width: u32,
    pub height: u32,
    /// Frames per second as ffmpeg writes it (`30000/1001`), and its value.
    pub rate: String,
    pub fps: f64,
    /// The frame count the container declares (or its duration times the
    /// rate), if it declares either.
    pub declared_frames: Option<u64>,
}

fn ratio(s: &str) -> Option<f64> {
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let (n, d) = (n.trim().parse::<f64>().ok()?, d.trim().parse::<f64>().ok()?);
    (d > 0.0 && n > 0.0).then_some(n / d)
}

/// The first video stream of `path`; an error (naming the file and what
/// ffprobe said) if there is none.
pub fn probe(path: &Path) -> Result<Probe> {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg("stream=width,height,r_frame_rate,avg_frame_rate,nb_frames,duration:format=duration")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .context("running ffprobe (Debian: apt-get install ffmpeg)")?;
    let msg = String::from_utf8_lossy(&out.stderr);
    let first = msg.lines().last().unwrap_or("").trim();
    if !out.status.success() {
        bail!("{}: not a readable video ({first})", path.display());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{}: ffprobe's answer is not JSON", path.display()))?;
    let Some(s) = v["streams"].get(0) else {
        bail!("{}: holds no video stream", path.display());
    };
    let num = |v: &serde_json::Value| v.as_str().and_then(|t| t.parse::<f64>().ok());
    let (width, height) = (
        s["width"].as_u64().unwrap_or(0) as u32,
        s["height"].as_u64().unwrap_or(0) as u32,
    );
    if width == 0 || height == 0 {
        bail!("{}: the video stream has no frame size", path.display());
    }
    // The average rate keeps the file's duration when frames are written
    // at a constant rate; the nominal rate is the fallback.
    let (rate, fps) = ["avg_frame_rate", "r_frame_rate"]
        .iter()
        .filter_map(|k| s[*k].as_str())
        .find_map(|r| ratio(r).map(|f| (r.to_string(), f)))
        .with_context(|| format!("{}: the video stream has no frame rate", path.display()))?;
    let duration = num(&s["duration"]).or_else(|| num(&v["format"]["duration"]));
    let declared_frames = num(&s["nb_frames"])
        .map(|n| n as u64)
        .or_else(|| duration.map(|d| (d * fps).round() as u64));
    Ok(Probe {
        width,
        height,
        rate,
        fps,
        declared_frames,
    })
}

/// How decoding ended.
#[derive(Debug, Default)]
pub struct Ending {
    /// Error lines ffmpeg logged, last ones kept.
    pub errors: Vec<String>,
}

/// Decodes every frame of `path` as RGB and hands each to `each` with its
/// index, in order. Returns what ffmpeg complained of; a file that yields
/// no frame at all is an error.
pub fn decode(
    path: &Path,
    mut each: impl FnMut(u64, image::RgbImage) -> Result<()>,
) -> Result<(u64, Ending)> {
    let mut cmd = FfmpegCommand::new();
    cmd.hide_banner()
        .input(path)
        .args(["-map", "0:v:0", "-an", "-sn", "-fps_mode", "passthrough"])
        .rawvideo();
    crate::runtime::die_with_parent(cmd.as_inner_mut(), libc::SIGKILL);
    let mut child = cmd
        .spawn()
        .context("running ffmpeg (Debian: apt-get install ffmpeg)")?;
    let mut ending = Ending::default();
    let mut frames = 0u64;
    let mut failed: Option<anyhow::Error> = None;
    let events = child
        .iter()
        .with_context(|| format!("{}: reading ffmpeg's output", path.display()))?;
    for ev in events {
        match ev {
            FfmpegEvent::OutputFrame(f) => {
                if failed.is_some() {
                    continue;
                }
                let Some(img) = image::RgbImage::from_raw(f.width, f.height, f.data) else {
                    failed = Some(anyhow::anyhow!(
                        "{}: ffmpeg sent a frame of the wrong size",
                        path.display()
                    ));
                    break;
                };
                if let Err(e) = each(frames, img) {
                    failed = Some(e);
                    break;
                }
                frames += 1;
            }
            FfmpegEvent::Log(LogLevel::Error | LogLevel::Fatal, m) | FfmpegEvent::Error(m) => {
                ending.errors.push(m.trim().to_string());
                if ending.errors.len() > 20 {
                    ending.errors.remove(0);
                }
            }
            _ => {}
        }
    }
    if failed.is_some() {
        let _ = child.kill();
    }
    let _ = child.wait();
    if let Some(e) = failed {
        return Err(e);
    }
    if frames == 0 {
        bail!(
            "{}: no frame could be decoded ({})",
            path.display(),
            ending
                .errors
                .last()
                .map_or("ffmpeg reported no error", |s| s.as_str())
        );
    }
    Ok((frames, ending))
}

/// An H.264 MP4 being written from RGB frames, into a temporary file that
/// `finish` renames into place.
pub struct Encoder {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    finished: bool,
    tmp: PathBuf,
    out: PathBuf,
    log: PathBuf,
    pub frames: u64,
}

impl Encoder {
    pub fn new(out: &Path, width: u32, height: u32, rate: &str) -> Result<Encoder> {
        let tmp = out.with_file_name(format!(
            ".{}.partial.mp4",
            out.file_name().unwrap_or_default().to_string_lossy()
        ));
        let log = tmp.with_extension("log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("writing {}", log.display()))?;
        // A plain process: ffmpeg-sidecar's child wants every pipe, and an
        // encoder that is only written to needs none but stdin.
        let mut cmd = std::process::Command::new(ffmpeg_sidecar::paths::ffmpeg_path());
        // A killed fer must not leave an encoder finishing a partial file.
        crate::runtime::die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = cmd
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24"])
            .args(["-s", &format!("{width}x{height}"), "-framerate", rate])
            .args(["-i", "-"])
            .args([
                "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
            ])
            // yuv420p (what players take) needs even sides.
            .args([
                "-vf",
                "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-fps_mode", "passthrough"])
            .arg(&tmp)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("running ffmpeg to write the annotated video")?;
        let stdin = child.stdin.take().context("ffmpeg has no stdin")?;
        Ok(Encoder {
            child,
            stdin: Some(stdin),
            finished: false,
            tmp,
            out: out.to_path_buf(),
            log,
            frames: 0,
        })
    }

    pub fn push(&mut self, frame: &image::RgbImage) -> Result<()> {
        self.stdin
            .as_mut()
            .context("the annotated video is already closed")?
            .write_all(frame.as_raw())
            .with_context(|| {
                format!(
                    "ffmpeg stopped writing {}: {}",
                    self.out.display(),
                    self.tail()
                )
            })?;
        self.frames += 1;
        Ok(())
    }

    /// Why ffmpeg stopped: its last message, or, when it could not even
    /// write that (its log is on the same disk), a full disk named as such.
    fn tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let dir = self.out.parent().unwrap_or(Path::new("."));
        stopped_because(t.lines().last(), free_bytes(dir), dir)
    }

    /// Closes the stream, waits for ffmpeg and renames the file into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        if !status.success() {
            bail!(
                "ffmpeg could not write {}: {}",
                self.out.display(),
                self.tail()
            );
        }
        std::fs::rename(&self.tmp, &self.out)
            .with_context(|| format!("writing {}", self.out.display()))?;
        self.finished = true;
        let _ = std::fs::remove_file(&self.log);
        Ok(self.out.clone())
    }
}

/// Free bytes for an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C path and a zeroed struct for the answer.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0)
        .then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// The reason given for a stopped encoder: ffmpeg's last line, else a disk
/// with under 1 MiB free named as full, else that ffmpeg said nothing.
fn stopped_because(last_line: Option<&str>, free: Option<u64>, dir: &Path) -> String {
    match (last_line.filter(|l| !l.trim().is_empty()), free) {
        (Some(l), _) => l.to_string(),
        (None, Some(f)) if f < 1 << 20 => {
            format!("no space left on device ({} is full)", dir.display())
        }
        (None, _) => "ffmpeg ended without a message".into(),
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // Without a successful `finish` (an error): leave no partial file.
        if !self.finished {
            drop(self.stdin.take());
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_file(&self.tmp);
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_encoder_on_a_full_disk_is_named_as_such() {
        let d = Path::new("/out");
        assert_eq!(
            stopped_because(Some("Conversion failed!"), Some(0), d),
            "Conversion failed!"
        );
        assert_eq!(
            stopped_because(None, Some(4096), d),
            "no space left on device (/out is full)"
        );
        assert_eq!(
            stopped_because(Some(""), Some(10 << 30), d),
            "ffmpeg ended without a message"
        );
        assert!(free_bytes(Path::new("/")).is_some_and(|b| b > 0));
    }

    #[test]
    fn rates_are_read_as_ratios() {
        assert_eq!(ratio("30/1"), Some(30.0));
        assert!((ratio("30000/1001").unwrap() - 29.97).abs() < 0.001);
        assert_eq!(ratio("25"), Some(25.0));
        assert_eq!(ratio("0/0"), None);
    }
}
