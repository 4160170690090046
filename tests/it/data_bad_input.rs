//! Bad input: generated fixtures (corrupt, truncated, wrong size, colour,
//! unknown folder, empty class, malformed CSV rows) under both policies.

use crate::common;

use common::{jpeg_gray, jpeg_rgb, write};
use fer::data::{self, BadInputPolicy, DataConfig, IssueKind, Origin};
use std::path::Path;

fn cfg(dir: &Path, policy: BadInputPolicy) -> DataConfig {
    DataConfig {
        dir: dir.to_path_buf(),
        on_bad_input: policy,
        cache: false,
        ..DataConfig::default()
    }
}

/// A small Kaggle-layout tree with every kind of bad input.
fn bad_tree(root: &Path) {
    for (i, class) in ["angry", "fear", "happy", "sad", "surprise", "neutral"]
        .iter()
        .enumerate()
    {
        write(
            &root.join(format!("train/{class}/Training_{i}0.jpg")),
            &jpeg_gray(48, 48, i as u8),
        );
        write(
            &root.join(format!("train/{class}/Training_{i}1.jpg")),
            &jpeg_gray(48, 48, 50 + i as u8),
        );
    }
    let good = jpeg_gray(48, 48, 9);
    write(
        &root.join("train/angry/Training_truncated.jpg"),
        &good[..good.len() / 2],
    );
    write(
        &root.join("train/angry/Training_garbage.jpg"),
        b"this is not a jpeg at all",
    );
    write(
        &root.join("train/happy/Training_small.jpg"),
        &jpeg_gray(40, 40, 3),
    );
    write(
        &root.join("train/happy/Training_colour.jpg"),
        &jpeg_rgb(48, 48),
    );
    std::fs::create_dir_all(root.join("train/disgust")).unwrap();
    write(
        &root.join("train/memes/Training_x.jpg"),
        &jpeg_gray(48, 48, 1),
    );
    write(&root.join("train/notes.txt"), b"hello");
    write(&root.join("train/sad/readme.md"), b"hello");
    write(
        &root.join("test/happy/PublicTest_1.jpg"),
        &jpeg_gray(48, 48, 7),
    );
    write(
        &root.join("test/sad/PrivateTest_2.jpg"),
        &jpeg_gray(48, 48, 8),
    );
}

#[test]
fn skip_policy_keeps_good_images_and_names_every_bad_file() {
    let tmp = tempfile::tempdir().unwrap();
    bad_tree(tmp.path());
    let loaded = data::load(
        &cfg(tmp.path(), BadInputPolicy::Skip),
        &tmp.path().join("cache"),
    )
    .unwrap();
    let d = &loaded.data;
    assert_eq!(d.train.len(), 12, "two good images in each of six classes");
    assert_eq!(d.test.len(), 2);
    assert_eq!(
        d.test.origins,
        vec![Origin::PublicTest, Origin::PrivateTest]
    );
    let r = &d.report;
    assert_eq!(r.count(IssueKind::CorruptImage), 2);
    assert_eq!(r.count(IssueKind::WrongSize), 1);
    assert_eq!(r.count(IssueKind::NotGrayscale), 1);
    assert_eq!(r.count(IssueKind::UnknownFolder), 1);
    assert_eq!(r.count(IssueKind::UnexpectedFile), 2);
    // disgust is empty in train; test lacks most classes (folders missing).
    assert!(r
        .issues
        .iter()
        .any(|i| i.kind == IssueKind::EmptyClass && i.location == "train/disgust"));
    assert!(r
        .issues
        .iter()
        .any(|i| i.kind == IssueKind::EmptyClass && i.location == "test/angry"));
    let loc = |k: IssueKind| -> Vec<String> {
        r.issues
            .iter()
            .filter(|i| i.kind == k)
            .map(|i| i.location.clone())
            .collect()
    };
    assert_eq!(
        loc(IssueKind::CorruptImage),
        vec![
            "train/angry/Training_garbage.jpg",
            "train/angry/Training_truncated.jpg"
        ]
    );
    assert_eq!(
        loc(IssueKind::WrongSize),
        vec!["train/happy/Training_small.jpg"]
    );
    assert_eq!(
        loc(IssueKind::NotGrayscale),
        vec!["train/happy/Training_colour.jpg"]
    );
    assert_eq!(loc(IssueKind::UnknownFolder), vec!["train/memes"]);
    let truncated = r
        .issues
        .iter()
        .find(|i| i.location.ends_with("truncated.jpg"))
        .unwrap();
    assert!(truncated.detail.contains("truncated"), "{truncated}");
    let small = r
        .issues
        .iter()
        .find(|i| i.kind == IssueKind::WrongSize)
        .unwrap();
    assert!(small.detail.contains("40x40"), "{small}");
}

#[test]
fn error_policy_fails_after_scanning_with_every_problem_listed() {
    let tmp = tempfile::tempdir().unwrap();
    bad_tree(tmp.path());
    let err = data::load(
        &cfg(tmp.path(), BadInputPolicy::Error),
        &tmp.path().join("cache"),
    )
    .expect_err("bad input must fail under `on_bad_input: error`");
    let msg = format!("{err:#}");
    for f in [
        "Training_truncated.jpg",
        "Training_garbage.jpg",
        "Training_small.jpg",
        "Training_colour.jpg",
        "train/memes",
    ] {
        assert!(msg.contains(f), "{f} missing from:\n{msg}");
    }
    assert!(msg.contains("5 bad input item(s)"), "{msg}");
    assert!(msg.contains("on_bad_input: skip"), "{msg}");
}

#[test]
fn cached_load_still_applies_the_policy() {
    let tmp = tempfile::tempdir().unwrap();
    bad_tree(tmp.path());
    let cache = tmp.path().join("cache");
    let mut c = cfg(tmp.path(), BadInputPolicy::Skip);
    c.cache = true;
    let first = data::load(&c, &cache).unwrap();
    assert!(!first.from_cache);
    let second = data::load(&c, &cache).unwrap();
    assert!(second.from_cache);
    assert_eq!(first.data, second.data);
    assert_eq!(first.data.train.pixels, second.data.train.pixels);
    c.on_bad_input = BadInputPolicy::Error;
    assert!(data::load(&c, &cache).is_err());
}

fn row(emotion: &str, pixels: &str, usage: &str) -> String {
    format!("{emotion},{pixels},{usage}\n")
}

#[test]
fn malformed_csv_rows_are_named_by_line() {
    let tmp = tempfile::tempdir().unwrap();
    let px: Vec<String> = (0..2304).map(|i| (i % 256).to_string()).collect();
    let good = px.join(" ");
    let mut csv = String::from("emotion,pixels,Usage\n");
    csv += &row("3", &good, "Training"); // line 2
    csv += &row("9", &good, "Training"); // 3: bad label
    csv += &row("0", &px[..100].join(" "), "Training"); // 4: too few pixels
    csv += &row("1", &good.replacen("5", "x", 1), "PublicTest"); // 5: not a number
    csv += &row("2", &good, "Validation"); // 6: unknown usage
    csv += "4\n"; // 7: missing fields
    csv += &row("5", &good, "PrivateTest"); // 8
    csv += &row("6", &good, "PublicTest"); // 9
    let path = tmp.path().join("fer2013.csv");
    std::fs::write(&path, csv).unwrap();

    let loaded = data::load(&cfg(&path, BadInputPolicy::Skip), &tmp.path().join("cache")).unwrap();
    let d = &loaded.data;
    assert_eq!(d.train.labels, vec![3]);
    assert_eq!(d.test.labels, vec![5, 6]);
    assert_eq!(
        d.test.origins,
        vec![Origin::PrivateTest, Origin::PublicTest]
    );
    assert_eq!(d.train.image(0)[..4], [0, 1, 2, 3]);
    let locs: Vec<&str> = d
        .report
        .issues
        .iter()
        .map(|i| i.location.as_str())
        .collect();
    assert_eq!(
        locs,
        vec![
            "fer2013.csv:3",
            "fer2013.csv:4",
            "fer2013.csv:5",
            "fer2013.csv:6",
            "fer2013.csv:7"
        ]
    );
    assert!(d
        .report
        .issues
        .iter()
        .all(|i| i.kind == IssueKind::MalformedRow));
    let msgs: Vec<String> = d.report.issues.iter().map(|i| i.to_string()).collect();
    assert!(msgs[0].contains("emotion '9'"), "{}", msgs[0]);
    assert!(msgs[1].contains("100 pixels"), "{}", msgs[1]);
    assert!(msgs[2].contains("'x"), "{}", msgs[2]);
    assert!(msgs[3].contains("Validation"), "{}", msgs[3]);

    let err = data::load(
        &cfg(&path, BadInputPolicy::Error),
        &tmp.path().join("cache"),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("fer2013.csv:7"));
}

#[test]
fn a_csv_without_the_right_header_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("faces.csv");
    std::fs::write(&path, "label,data\n1,2\n").unwrap();
    let err = data::load(&cfg(&path, BadInputPolicy::Skip), &tmp.path().join("c")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("faces.csv:1") && msg.contains("emotion,pixels"),
        "{msg}"
    );
}

#[test]
fn missing_data_set_says_where_to_get_it() {
    let err = data::load(
        &cfg(Path::new("/nonexistent/fer"), BadInputPolicy::Skip),
        Path::new("/tmp"),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("msambare/fer2013") && msg.contains("train/<class>"),
        "{msg}"
    );
}
