//! The real FER-2013 at `$FER2013_DIR`: exact counts, digest and cache,
//! what a cache hit still notices (on a copied part of the real data),
//! CSV/folder equivalence, quality flags, split and loader determinism.

use crate::common;

use fer::data::fer2013::CLASSES;
use fer::data::loader::{start_epoch, LoaderSpec, Order};
use fer::data::split::stratified;
use fer::data::{
    self, quality, AugmentCfg, BadInputPolicy, Convert, DataConfig, ImageSet, IssueKind, Origin,
    PIXELS,
};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Counts from ../shared/fer2013/README.md, in fer's class order.
fn readme_counts(name: &str) -> (usize, usize) {
    match name {
        "angry" => (3995, 467),
        "disgust" => (436, 56),
        "fear" => (4097, 496),
        "happy" => (7215, 895),
        "neutral" => (4965, 607),
        "sad" => (4830, 653),
        "surprise" => (3171, 415),
        _ => unreachable!(),
    }
}

fn loaded() -> &'static data::FerData {
    static DATA: OnceLock<data::FerData> = OnceLock::new();
    DATA.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = DataConfig {
            dir: common::fer_dir(),
            cache: false,
            ..DataConfig::default()
        };
        data::load(&cfg, tmp.path()).unwrap().data
    })
}

#[test]
fn exact_counts_per_class_and_split() {
    let d = loaded();
    let (train, test) = (d.train.class_counts(7), d.test.class_counts(7));
    for (c, name) in CLASSES.iter().enumerate() {
        let (tr, te) = readme_counts(name);
        assert_eq!(train[c], tr, "train/{name}");
        assert_eq!(test[c], te, "test/{name}");
    }
    assert_eq!(d.train.len(), 28_709);
    assert_eq!(d.test.len(), 3_589);
    assert_eq!(d.train.pixels.len(), 28_709 * PIXELS);
    assert!(d.train.origins.iter().all(|&o| o == Origin::Training));
    // Only the PublicTest half is shipped here; it is recognised by name.
    assert_eq!(d.test.origins_present(), vec![Origin::PublicTest]);
    assert!(d.report.issues.is_empty(), "{:?}", d.report);
    assert_eq!(d.digest.len(), 64);
}

#[test]
fn second_load_comes_from_the_cache_and_is_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = DataConfig {
        dir: common::fer_dir(),
        ..DataConfig::default()
    };
    let first = data::load(&cfg, tmp.path()).unwrap();
    assert!(!first.from_cache);
    let second = data::load(&cfg, tmp.path()).unwrap();
    assert!(second.from_cache);
    assert_eq!(first.data, second.data);
    assert_eq!(first.data.train.pixels, second.data.train.pixels);
    assert_eq!(first.data.test.pixels, second.data.test.pixels);
    assert_eq!(first.data.digest, loaded().digest);
}

/// Copies the first `train` and `test` images of each class of the real
/// data set into `root` (copies, not links: tests change them).
fn real_part(root: &Path, train: usize, test: usize) {
    for (split, n) in [("train", train), ("test", test)] {
        for class in CLASSES {
            let from = common::fer_dir().join(split).join(class);
            let mut names: Vec<_> = std::fs::read_dir(&from)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            let to = root.join(split).join(class);
            std::fs::create_dir_all(&to).unwrap();
            for name in names.iter().take(n) {
                std::fs::copy(from.join(name), to.join(name)).unwrap();
            }
        }
    }
}

fn cached(dir: &Path, policy: BadInputPolicy) -> DataConfig {
    DataConfig {
        dir: dir.to_path_buf(),
        on_bad_input: policy,
        cache: true,
        ..DataConfig::default()
    }
}

fn issues(d: &data::FerData) -> Vec<(IssueKind, String)> {
    d.report
        .issues
        .iter()
        .map(|i| (i.kind, i.location.clone()))
        .collect()
}

/// Issue 22, point 8: the cache replaces decoding, never the scan. Problems
/// added to the folder after it was cached are reported on the cache hit as
/// a decoding load reports them, `on_bad_input: error` fails on them, and
/// once they are gone the report is clean again.
#[test]
fn a_cache_hit_still_reports_the_folders_problems() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fer");
    real_part(&root, 20, 5);
    let cache = tmp.path().join("cache");
    let first = data::load(&cached(&root, BadInputPolicy::Error), &cache).unwrap();
    assert!(!first.from_cache);
    assert!(
        first.data.report.issues.is_empty(),
        "{:?}",
        first.data.report
    );
    assert_eq!(first.data.train.len(), 140);

    // A class folder fer does not know, a stray file beside the classes and
    // one inside a class: none of them changes the images.
    let some_face = common::fer_dir().join("train/happy");
    let face = std::fs::read_dir(&some_face)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::create_dir_all(root.join("train/contempt")).unwrap();
    std::fs::copy(&face, root.join("train/contempt/Training_1.jpg")).unwrap();
    std::fs::write(root.join("train/labels.txt"), "notes").unwrap();
    std::fs::write(root.join("test/sad/readme.md"), "notes").unwrap();

    let hit = data::load(&cached(&root, BadInputPolicy::Skip), &cache).unwrap();
    assert!(
        hit.from_cache,
        "the images are unchanged, so the cache serves them"
    );
    assert_eq!(
        issues(&hit.data),
        vec![
            (IssueKind::UnexpectedFile, "test/sad/readme.md".to_string()),
            (IssueKind::UnknownFolder, "train/contempt".to_string()),
            (IssueKind::UnexpectedFile, "train/labels.txt".to_string()),
        ]
    );
    // Exactly what a load without the cache reports, with the same faces.
    let mut plain = cached(&root, BadInputPolicy::Skip);
    plain.cache = false;
    let decoded = data::load(&plain, &cache).unwrap();
    assert_eq!(decoded.data.report, hit.data.report);
    assert_eq!(decoded.data.train.pixels, hit.data.train.pixels);
    assert_eq!(decoded.data.digest, first.data.digest);

    // The policy fails on the hit, naming the unknown folder.
    let err = data::load(&cached(&root, BadInputPolicy::Error), &cache).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("1 bad input item(s)") && msg.contains("train/contempt: unknown class folder"),
        "{msg}"
    );

    // Gone again: a clean hit, nothing remembered from before.
    std::fs::remove_dir_all(root.join("train/contempt")).unwrap();
    std::fs::remove_file(root.join("train/labels.txt")).unwrap();
    std::fs::remove_file(root.join("test/sad/readme.md")).unwrap();
    let clean = data::load(&cached(&root, BadInputPolicy::Error), &cache).unwrap();
    assert!(clean.from_cache);
    assert!(
        clean.data.report.issues.is_empty(),
        "{:?}",
        clean.data.report
    );
}

/// Issue 22, point 8: an image rewritten with other bytes of the same size
/// and its modification time put back is noticed: decoded again, a new
/// digest, the new face.
#[test]
fn a_same_size_rewrite_with_its_mtime_put_back_is_noticed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fer");
    real_part(&root, 20, 5);
    let cache = tmp.path().join("cache");
    let cfg = cached(&root, BadInputPolicy::Error);
    let first = data::load(&cfg, &cache).unwrap();
    assert!(!first.from_cache);
    assert!(data::load(&cfg, &cache).unwrap().from_cache);

    // Another real face with exactly the same number of bytes.
    let rel = first.data.train.sources[3].clone();
    let target = root.join(&rel);
    let old = std::fs::read(&target).unwrap();
    let other = std::fs::read_dir(common::fer_dir().join("train/angry"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .find(|b| b.len() == old.len() && *b != old)
        .expect("a real face of the same size");
    let before = std::fs::metadata(&target).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    std::fs::write(&target, &other).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&target)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap()),
        (before.len(), before.modified().unwrap())
    );

    let again = data::load(&cfg, &cache).unwrap();
    assert!(!again.from_cache, "the changed content must be decoded");
    assert_ne!(again.data.digest, first.data.digest);
    let i = again
        .data
        .train
        .sources
        .iter()
        .position(|s| *s == rel)
        .unwrap();
    let want = data::load::decode_face(&other, Convert::Strict).unwrap();
    assert_eq!(again.data.train.image(i), &want[..]);
    assert_ne!(first.data.train.image(3), &want[..]);
    // And the new content is what the cache now serves.
    let hit = data::load(&cfg, &cache).unwrap();
    assert!(hit.from_cache);
    assert_eq!(hit.data.digest, again.data.digest);
}

#[test]
fn challenge_csv_gives_the_same_faces_as_the_folders() {
    // Write the real faces in the challenge's CSV format, then read it back.
    let d = loaded();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("fer2013.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, "emotion,pixels,Usage").unwrap();
    let write_set = |f: &mut dyn Write, s: &ImageSet| {
        for i in 0..s.len() {
            let px: Vec<String> = s.image(i).iter().map(|p| p.to_string()).collect();
            writeln!(
                f,
                "{},{},{}",
                s.labels[i],
                px.join(" "),
                s.origins[i].name()
            )
            .unwrap();
        }
    };
    write_set(&mut f, &d.train);
    write_set(&mut f, &d.test);
    drop(f);
    let cfg = DataConfig {
        dir: tmp.path().to_path_buf(),
        cache: false,
        ..DataConfig::default()
    };
    let csv = data::load(&cfg, tmp.path()).unwrap().data;
    assert_eq!(csv.train.pixels, d.train.pixels);
    assert_eq!(csv.train.labels, d.train.labels);
    assert_eq!(csv.test.pixels, d.test.pixels);
    assert_eq!(csv.test.origins, d.test.origins);
    assert!(csv.report.issues.is_empty());
    assert_eq!(csv.train.sources[0], "fer2013.csv:2");
}

#[test]
fn quality_flags_find_fer2013s_known_blanks_and_duplicates() {
    let d = loaded();
    let q = quality::assess(&d.train, &d.test, DataConfig::default().blank_std);
    // Facts of this data set (checked by eye: blank faces are flat grey/black).
    assert_eq!(q.blank_train.len(), 12);
    assert_eq!(q.blank_test.len(), 1);
    assert_eq!(q.dup_train.groups, 1035);
    assert_eq!(q.train_in_test, 351);
    assert!(q.train_in_test_label_conflicts > 0);
}

#[test]
fn split_is_stratified_and_seeded_on_real_labels() {
    let d = loaded();
    let a = stratified(&d.train.labels, 0.1, 0);
    assert_eq!(a, stratified(&d.train.labels, 0.1, 0));
    assert_eq!(a.val.len(), 2873);
    for (c, name) in CLASSES.iter().enumerate() {
        let held = a
            .val
            .iter()
            .filter(|&&i| d.train.labels[i] as usize == c)
            .count();
        let (total, _) = readme_counts(name);
        assert_eq!(held, (total as f64 * 0.1).round() as usize, "{name}");
    }
    assert_ne!(a.val, stratified(&d.train.labels, 0.1, 1).val);
}

#[test]
fn loader_batches_real_faces_reproducibly() {
    let d = loaded();
    let set = Arc::new(d.train.select(&(0..1000).collect::<Vec<_>>()));
    let spec = LoaderSpec {
        batch_size: 64,
        augment: Some(AugmentCfg::default()),
        eval: AugmentCfg::default(),
        order: Order::Shuffle,
        seed: 42,
        drop_last: true,
        prefetch: 2,
    };
    let a: Vec<_> = start_epoch(set.clone(), &spec, 3, 0).collect();
    let b: Vec<_> = start_epoch(set, &spec, 3, 0).collect();
    assert_eq!(a.len(), 15);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.x.size(), vec![64, 1, 44, 44]);
        assert!(x.x.equal(&y.x));
        assert!(x.y.equal(&y.y));
    }
    // Normalised inputs: roughly zero mean, unit spread over a batch.
    let mean = a[0].x.mean(tch::Kind::Float).double_value(&[]);
    assert!(mean.abs() < 0.5, "batch mean {mean}");
}
