//! Reads a labelled data set from one folder per class (FER-2013's Kaggle
//! layout: `train/<class>/`, `test/<class>/`) or the challenge CSV into
//! `FerData`, decoding and converting in parallel, and consults the decode
//! cache. The class list is the config's, else FER-2013's for its folders,
//! else the folder names sorted. Bad files and rows are collected as issues;
//! the policy is applied at the end, so a load never stops half-way. A
//! folder with `test/` and no `train/` (a new labelled test set) loads
//! through [`load_test_folder`], the same way.

use super::cache;
use super::config::Convert;
use super::config::{DataConfig, DataFormat};
use super::issues::{IssueKind, LoadReport};
use super::{class_index, fer2013, FerData, Origin, PIXELS, SIDE};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

/// Bumped when the decoded representation changes, so old caches are ignored.
pub const FORMAT_VERSION: u32 = 3;
/// Version of the content digest's definition; independent of the cache
/// format so the digest logged with runs stays comparable.
const DIGEST_VERSION: u32 = 2;

/// A loaded data set and how it was obtained.
#[derive(Debug)]
pub struct Loaded {
    pub data: FerData,
    pub from_cache: bool,
    pub seconds: f64,
}

/// The message for a data set that is not there.
pub fn missing_dataset_help(path: &Path) -> String {
    format!(
        "FER-2013 not found at '{}'.\n\
         Download it from Kaggle (dataset `msambare/fer2013`, e.g. \
         `kaggle datasets download -d msambare/fer2013`), unzip it, and point \
         `--data` or FER2013_DIR at the folder. Expected layout:\n  \
         <dir>/train/<class>/*.jpg   (angry disgust fear happy neutral sad surprise)\n  \
         <dir>/test/<class>/*.jpg    (PublicTest_*/PrivateTest_* file names)\n\
         Any other labelled data set in this layout (one folder per class, \
         any image size and colour) loads the same way; see docs/data.md.\n\
         `fer eval` (split test) also takes a folder with test/<class>/ alone. \
         The original challenge CSV (`fer2013.csv` with columns emotion,pixels,Usage) \
         also works: pass the file, or a folder holding it.",
        path.display()
    )
}

/// Loads the data set named by `cfg`, using the cache under `cache_dir` when
/// `cfg.cache` is on, then applies the bad-input policy.
pub fn load(cfg: &DataConfig, cache_dir: &Path) -> Result<Loaded> {
    let start = Instant::now();
    let (format, source) = resolve_format(&cfg.dir, cfg.format)?;
    let (data, from_cache) = match format {
        DataFormat::Folders => {
            let scan = scan_folders(&source, false, cfg)?;
            load_folders(&source, scan, cfg, cache_dir)?
        }
        DataFormat::Csv => {
            let classes = cfg.classes.clone().unwrap_or_else(fer2013::classes);
            let fingerprint = stat_fingerprint_file(&source, &classes)?;
            let cached = if cfg.cache {
                cache::lookup(cache_dir, &fingerprint)
            } else {
                None
            };
            match cached {
                Some(data) => (data, true),
                None => {
                    let mut data = read_csv(&source, &classes)?;
                    data.report.sort();
                    if cfg.cache {
                        cache::store(cache_dir, &fingerprint, &data);
                    }
                    (data, false)
                }
            }
        }
        DataFormat::Auto => unreachable!("resolved above"),
    };
    let expected = "train/<class>/ and test/<class>/ image files, or fer2013.csv rows";
    let mut loaded = finish(
        data,
        from_cache,
        &source,
        cfg,
        start,
        ("any split", expected),
    )?;
    hold_out_test(&mut loaded.data, cfg)?;
    if let Some(g) = &cfg.test_groups {
        g.apply(&mut loaded.data.test)?;
    }
    Ok(loaded)
}

/// With no test images, moves the images of `data.test_list`, or a
/// stratified, seeded `data.test_fraction` of train, into test (after the
/// cache, so one cached decode serves any split).
fn hold_out_test(data: &mut FerData, cfg: &DataConfig) -> Result<()> {
    if let Some(list) = &cfg.test_list {
        if !data.test.is_empty() {
            bail!(
                "{}: data.test_list is given but the data set has test images of its own (a test/ folder or Usage rows); use one test split",
                list.display()
            );
        }
        let text = std::fs::read_to_string(list)
            .with_context(|| format!("reading data.test_list {}", list.display()))?;
        let at: std::collections::HashMap<&str, usize> = data
            .train
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let mut test = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let name = line.split('#').next().unwrap_or("").trim();
            if name.is_empty() {
                continue;
            }
            let Some(&i) = at.get(name) else {
                bail!(
                    "{}:{}: '{name}' is not an image of the data set (expected a path as it lists them, e.g. {})",
                    list.display(),
                    n + 1,
                    data.train.sources.first().map_or("train/<class>/<file>", String::as_str)
                );
            };
            test.push(i);
        }
        test.sort_unstable();
        test.dedup();
        let rest: Vec<usize> = (0..data.train.len())
            .filter(|i| test.binary_search(i).is_err())
            .collect();
        data.test = data.train.select(&test);
        data.train = data.train.select(&rest);
        return Ok(());
    }
    if !data.test.is_empty() || cfg.test_fraction <= 0.0 {
        return Ok(());
    }
    let split = super::split::stratified(&data.train.labels, cfg.test_fraction, cfg.split_seed);
    data.test = data.train.select(&split.val);
    data.train = data.train.select(&split.train);
    Ok(())
}

/// Whether `dir` is a test set alone: a folder with `test/` but neither
/// `train/` nor `fer2013.csv` (which [`load`] would read instead).
pub fn is_test_only(dir: &Path) -> bool {
    dir.join("test").is_dir() && !dir.join("train").is_dir() && !dir.join("fer2013.csv").is_file()
}

/// Loads `cfg.dir/test/` alone into `FerData::test` (train stays empty): a
/// labelled test set in the Kaggle layout with no `train/` beside it. The
/// scan, decoding, cache and bad-input policy are [`load`]'s; the digest
/// covers `test/` only. An unknown class folder is an error here, where a
/// full load skips it with a warning: a test set is scored whole, and a
/// folder left out (`happiness/` for `happy/`) would change the score
/// without a word.
pub fn load_test_folder(cfg: &DataConfig, cache_dir: &Path) -> Result<Loaded> {
    let start = Instant::now();
    let root = cfg.dir.as_path();
    if !root.join("test").is_dir() {
        bail!("{}", missing_dataset_help(root));
    }
    let scan = scan_folders(root, true, cfg)?;
    let unknown: Vec<&str> = scan
        .report
        .issues
        .iter()
        .filter(|i| i.kind == IssueKind::UnknownFolder)
        .map(|i| i.location.as_str())
        .collect();
    if !unknown.is_empty() {
        bail!(
            "{}: unknown class folder {} in a test set; expected only the classes {} (a test set is scored whole, so no folder of it is skipped; `fer eval --class-map` maps or drops other classes)",
            root.display(),
            unknown.join(", "),
            scan.classes.join(", ")
        );
    }
    let (data, from_cache) = load_folders(root, scan, cfg, cache_dir)?;
    let mut loaded = finish(
        data,
        from_cache,
        root,
        cfg,
        start,
        ("test/", "test/<class>/ image files"),
    )?;
    if let Some(g) = &cfg.test_groups {
        g.apply(&mut loaded.data.test)?;
    }
    Ok(loaded)
}

/// A scanned folder's data: from the cache when its fingerprint is there,
/// else decoded (and cached).
fn load_folders(
    root: &Path,
    scan: Scan,
    cfg: &DataConfig,
    cache_dir: &Path,
) -> Result<(FerData, bool)> {
    let cached = if cfg.cache {
        cache::lookup(cache_dir, &scan.fingerprint)
    } else {
        None
    };
    Ok(match cached {
        Some(mut data) => {
            // The folder's structure is this scan's, never the cache's: a
            // stray file or unknown folder added since is reported exactly
            // as a decoding load reports it.
            let cached = std::mem::take(&mut data.report);
            data.report = folder_report(root, scan.report, cached, &data);
            (data, true)
        }
        None => {
            let fingerprint = scan.fingerprint.clone();
            let data = decode_folders(root, scan)?;
            if cfg.cache {
                cache::store(cache_dir, &fingerprint, &data);
            }
            (data, false)
        }
    })
}

/// The end of every load: the bad-input policy (cached or not, the report
/// is complete here, so it applies the same way), the warnings, and a load
/// with nothing usable refused; `empty` names where images were looked for
/// and what was expected there.
fn finish(
    data: FerData,
    from_cache: bool,
    source: &Path,
    cfg: &DataConfig,
    start: Instant,
    empty: (&str, &str),
) -> Result<Loaded> {
    data.report
        .check(cfg.on_bad_input)
        .with_context(|| format!("loading {}", source.display()))?;
    for issue in &data.report.issues {
        tracing::warn!("{issue}");
    }
    if data.train.is_empty() && data.test.is_empty() {
        bail!(
            "{}: no usable images in {} (expected {})",
            source.display(),
            empty.0,
            empty.1
        );
    }
    Ok(Loaded {
        data,
        from_cache,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Decides the format and the concrete path (folder or CSV file).
pub fn resolve_format(dir: &Path, format: DataFormat) -> Result<(DataFormat, PathBuf)> {
    if !dir.exists() {
        bail!("{}", missing_dataset_help(dir));
    }
    let csv_in = |d: &Path| -> Option<PathBuf> {
        let p = d.join("fer2013.csv");
        p.is_file().then_some(p)
    };
    match format {
        DataFormat::Folders => {
            if !dir.join("train").is_dir() {
                bail!("{}", missing_dataset_help(dir));
            }
            Ok((DataFormat::Folders, dir.to_path_buf()))
        }
        DataFormat::Csv => {
            if dir.is_file() {
                Ok((DataFormat::Csv, dir.to_path_buf()))
            } else if let Some(p) = csv_in(dir) {
                Ok((DataFormat::Csv, p))
            } else {
                bail!("{}", missing_dataset_help(dir))
            }
        }
        DataFormat::Auto => {
            if dir.is_file() {
                Ok((DataFormat::Csv, dir.to_path_buf()))
            } else if dir.join("train").is_dir() {
                Ok((DataFormat::Folders, dir.to_path_buf()))
            } else if let Some(p) = csv_in(dir) {
                Ok((DataFormat::Csv, p))
            } else {
                bail!("{}", missing_dataset_help(dir))
            }
        }
    }
}

/// One image file found by the scan.
struct Entry {
    rel: String,
    path: PathBuf,
    is_test: bool,
    class: u8,
}

struct Scan {
    /// Class names in label order.
    classes: Vec<String>,
    /// What to do with images that are not 48x48 grey (`auto` resolved).
    convert: Convert,
    entries: Vec<Entry>,
    /// What the listing found: unknown folders, stray files, missing class
    /// folders. Taken on every load, cache hit or not.
    report: LoadReport,
    /// Key from every image's name and `stamp`: lets a second load find the
    /// cache without reading a single image.
    fingerprint: String,
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// The class list of a folder data set whose first split folder is
/// `split_dir`: `given`, else FER-2013's seven when the class folders are
/// some of its names (or all seven and strays, which are then skipped),
/// else the folder names sorted.
fn folder_classes(split_dir: &Path, given: Option<&[String]>) -> Result<Vec<String>> {
    if let Some(given) = given {
        return Ok(given.to_vec());
    }
    let mut names = Vec::new();
    if split_dir.is_dir() {
        for entry in sorted_dir(split_dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_hidden(&name) && entry.path().is_dir() {
                names.push(name);
            }
        }
    }
    let is_fer_name = |n: &String| fer2013::CLASSES.iter().any(|c| c.eq_ignore_ascii_case(n));
    let fer_names = names.iter().filter(|n| is_fer_name(n)).count();
    if fer_names == names.len() || fer_names == fer2013::CLASSES.len() {
        return Ok(fer2013::classes());
    }
    super::config::check_class_names(&names).map_err(|e| {
        anyhow::anyhow!(
            "{}: the class folders give {e}; set data.classes to name the classes",
            split_dir.display()
        )
    })?;
    Ok(names)
}

/// Lists `train/` and `test/`, or `test/` alone when `test_only`.
fn scan_folders(root: &Path, test_only: bool, cfg: &DataConfig) -> Result<Scan> {
    let mut entries = Vec::new();
    let mut report = LoadReport::default();
    let mut class_dirs = Vec::new();
    let splits: &[(&str, bool)] = match test_only {
        true => &[("test", true)],
        false => &[("train", false), ("test", true)],
    };
    let classes = folder_classes(&root.join(splits[0].0), cfg.classes.as_deref())?;
    let convert = cfg.convert.resolve(&classes);
    for &(split, is_test) in splits {
        let split_dir = root.join(split);
        if !split_dir.is_dir() {
            if is_test {
                tracing::warn!("{}: no test/ folder; the test set is empty", root.display());
                continue;
            }
            bail!("{}", missing_dataset_help(root));
        }
        let mut seen = vec![false; classes.len()];
        for entry in sorted_dir(&split_dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_hidden(&name) {
                continue;
            }
            let rel = format!("{split}/{name}");
            if !entry.path().is_dir() {
                report.push(
                    IssueKind::UnexpectedFile,
                    rel,
                    "expected one folder per class",
                );
                continue;
            }
            let Some(class) = class_index(&classes, &name) else {
                report.push(
                    IssueKind::UnknownFolder,
                    rel,
                    format!("ignored; expected one of: {}", classes.join(", ")),
                );
                continue;
            };
            seen[class] = true;
            class_dirs.push((rel, entry.path(), is_test, class as u8));
        }
        for (class, name) in classes.iter().enumerate() {
            if !seen[class] {
                report.push(
                    IssueKind::EmptyClass,
                    format!("{split}/{name}"),
                    "folder missing",
                );
            }
        }
    }
    // List and stat the class folders in parallel: the stat of every file is
    // most of a cached load's time.
    let listed: Vec<Result<ClassListing>> = class_dirs
        .par_iter()
        .map(|(rel, path, is_test, class)| list_class(rel, path, *is_test, *class))
        .collect();
    let mut fp = blake3::Hasher::new();
    fp.update(format!("fer-folders-v{FORMAT_VERSION}\n").as_bytes());
    // Labels and pixels depend on the class list and the conversion.
    fp.update(format!("{}\n{}\n", classes.join("\0"), convert.name()).as_bytes());
    // A test-only load keys its own cache entry, never a full load's.
    if test_only {
        fp.update(b"test-only\n");
    }
    for l in listed {
        let l = l?;
        fp.update(l.fingerprint.as_bytes());
        entries.extend(l.entries);
        report.issues.extend(l.report.issues);
    }
    Ok(Scan {
        classes,
        convert,
        entries,
        report,
        fingerprint: fp.finalize().to_hex().to_string(),
    })
}

struct ClassListing {
    entries: Vec<Entry>,
    report: LoadReport,
    fingerprint: String,
}

fn list_class(rel: &str, dir: &Path, is_test: bool, class: u8) -> Result<ClassListing> {
    let mut out = ClassListing {
        entries: Vec::new(),
        report: LoadReport::default(),
        fingerprint: String::new(),
    };
    for file in sorted_dir(dir)? {
        let fname = file.file_name().to_string_lossy().into_owned();
        if is_hidden(&fname) {
            continue;
        }
        let frel = format!("{rel}/{fname}");
        let lower = fname.to_lowercase();
        let is_image = [".jpg", ".jpeg", ".png"].iter().any(|e| lower.ends_with(e));
        let meta = file.metadata().with_context(|| format!("reading {frel}"))?;
        // A link's own stat says nothing about the image it points at; a
        // dangling one keeps its own and fails as unreadable when decoded.
        let meta = if meta.file_type().is_symlink() {
            std::fs::metadata(file.path()).unwrap_or(meta)
        } else {
            meta
        };
        if meta.is_dir() || !is_image {
            out.report.push(
                IssueKind::UnexpectedFile,
                frel,
                "ignored; expected .jpg, .jpeg or .png",
            );
            continue;
        }
        out.fingerprint
            .push_str(&format!("{frel}\0{}\n", stamp(&meta)));
        out.entries.push(Entry {
            rel: frel,
            path: file.path(),
            is_test,
            class,
        });
    }
    Ok(out)
}

/// What a file's stat says about its content: size, modification time, and
/// on Unix the inode and status-change time. Setting the modification time
/// back (`touch -d`, `cp -p`, `File::set_modified`) itself moves the
/// ctime, which no call can set, so a rewrite of the same size with its
/// mtime restored still changes the stamp. It costs nothing more: the same
/// `stat` gives all of it.
fn stamp(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        format!(
            "{}\0{mtime}\0{}.{:09}\0{}",
            meta.len(),
            meta.ctime(),
            meta.ctime_nsec(),
            meta.ino()
        )
    }
    #[cfg(not(unix))]
    format!("{}\0{mtime}", meta.len())
}

/// A folder load's report: the scan's findings (taken fresh on every load),
/// the decoding findings about files (from this decode, or from the cache,
/// which is keyed by every image's stamp), then classes left with no usable
/// image. Both ways of loading build it here, so they report alike.
fn folder_report(root: &Path, scan: LoadReport, decoded: LoadReport, data: &FerData) -> LoadReport {
    let mut report = scan;
    report.issues.extend(
        decoded
            .issues
            .into_iter()
            .filter(|i| i.kind.found_by_decoding()),
    );
    // A class folder that exists but yields nothing usable is empty too.
    // A split with no folder at all (test/ in a full load, train/ in a
    // test-only one) has no classes to report.
    for (set, split) in [(&data.train, "train"), (&data.test, "test")] {
        if set.is_empty() && !root.join(split).is_dir() {
            continue;
        }
        let counts = set.class_counts(data.classes.len());
        for (c, name) in data.classes.iter().enumerate() {
            let loc = format!("{split}/{name}");
            let already = report
                .issues
                .iter()
                .any(|i| i.kind == IssueKind::EmptyClass && i.location == loc);
            if counts[c] == 0 && !already {
                report.push(IssueKind::EmptyClass, loc, "no usable images");
            }
        }
    }
    report.sort();
    report
}

fn sorted_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading folder {}", dir.display()))?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

/// Outcome of decoding one file.
enum Decoded {
    Ok(Box<[u8; PIXELS]>),
    Bad(IssueKind, String),
}

/// Decodes one image into the stored 48x48 grey: as it is, converted under
/// `Convert::Resize`, or a reason why not.
pub fn decode_face(
    bytes: &[u8],
    convert: Convert,
) -> Result<Box<[u8; PIXELS]>, (IssueKind, String)> {
    // The JPEG decoder fills a cut-off scan with grey and succeeds, so a
    // truncated file is caught by its missing end-of-image marker instead.
    if bytes.starts_with(&[0xFF, 0xD8]) {
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if !bytes[..end].ends_with(&[0xFF, 0xD9]) {
            return Err((
                IssueKind::CorruptImage,
                format!(
                    "truncated JPEG: no end-of-image marker ({} bytes)",
                    bytes.len()
                ),
            ));
        }
    }
    let img =
        image::load_from_memory(bytes).map_err(|e| (IssueKind::CorruptImage, e.to_string()))?;
    if convert == Convert::Resize {
        return Ok(to_stored(&img));
    }
    if img.width() as usize != SIDE || img.height() as usize != SIDE {
        return Err((
            IssueKind::WrongSize,
            format!("{}x{}, expected {SIDE}x{SIDE}", img.width(), img.height()),
        ));
    }
    if img.color() != image::ColorType::L8 {
        return Err((
            IssueKind::NotGrayscale,
            format!("{:?}, expected 8-bit grayscale (L8)", img.color()),
        ));
    }
    let mut out = Box::new([0u8; PIXELS]);
    out.copy_from_slice(img.as_bytes());
    Ok(out)
}

/// Any image as the stored 48x48 grey: ITU-R 601 luma, the centre square of
/// the shorter side, then a triangle-filter resize (whose support widens
/// with the scale, so a large photo is averaged rather than sampled).
pub fn to_stored(img: &image::DynamicImage) -> Box<[u8; PIXELS]> {
    let grey = img.to_luma8();
    let (w, h) = grey.dimensions();
    let side = w.min(h).max(1);
    let square =
        image::imageops::crop_imm(&grey, (w - side) / 2, (h - side) / 2, side, side).to_image();
    let resized = if side as usize == SIDE {
        square
    } else {
        image::imageops::resize(
            &square,
            SIDE as u32,
            SIDE as u32,
            image::imageops::FilterType::Triangle,
        )
    };
    let mut out = Box::new([0u8; PIXELS]);
    out.copy_from_slice(resized.as_raw());
    out
}

fn decode_folders(root: &Path, scan: Scan) -> Result<FerData> {
    let Scan {
        classes,
        convert,
        entries,
        report,
        ..
    } = scan;
    // Read, hash and decode in parallel; order is kept by the indexed collect.
    let results: Vec<(blake3::Hash, Decoded)> = entries
        .par_iter()
        .map(|e| match std::fs::read(&e.path) {
            Ok(bytes) => {
                let hash = blake3::hash(&bytes);
                let decoded = match decode_face(&bytes, convert) {
                    Ok(px) => Decoded::Ok(px),
                    Err((k, d)) => Decoded::Bad(k, d),
                };
                (hash, decoded)
            }
            Err(err) => (
                blake3::hash(b""),
                Decoded::Bad(IssueKind::CorruptImage, format!("unreadable: {err}")),
            ),
        })
        .collect();
    let mut decoding = LoadReport::default();
    let mut digest = blake3::Hasher::new();
    digest.update(format!("fer-content-v{DIGEST_VERSION}\n").as_bytes());
    let mut data = FerData {
        classes,
        ..FerData::default()
    };
    let n_train = entries.iter().filter(|e| !e.is_test).count();
    data.train.pixels.reserve(n_train * PIXELS);
    data.test.pixels.reserve((entries.len() - n_train) * PIXELS);
    for (e, (hash, decoded)) in entries.into_iter().zip(results) {
        digest.update(e.rel.as_bytes());
        digest.update(hash.as_bytes());
        match decoded {
            Decoded::Ok(px) => {
                let fname = e.rel.rsplit('/').next().unwrap_or("");
                let origin = Origin::from_file_name(fname);
                let set = if e.is_test {
                    &mut data.test
                } else {
                    &mut data.train
                };
                set.push(&px[..], e.class, origin, e.rel);
            }
            Decoded::Bad(kind, detail) => decoding.push(kind, e.rel, detail),
        }
    }
    data.report = folder_report(root, report, decoding, &data);
    data.digest = digest.finalize().to_hex().to_string();
    Ok(data)
}

fn stat_fingerprint_file(path: &Path, classes: &[String]) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let key = format!(
        "fer-csv-v{FORMAT_VERSION}\n{}\0{}\0{}",
        path.display(),
        stamp(&meta),
        classes.join("\0")
    );
    Ok(blake3::hash(key.as_bytes()).to_hex().to_string())
}

/// Reads the challenge CSV (`emotion,pixels,Usage`, columns found by name);
/// `emotion` indexes `classes`.
pub fn read_csv(path: &Path, classes: &[String]) -> Result<FerData> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes.as_slice());
    let headers = rdr
        .headers()
        .with_context(|| format!("{name}:1: cannot read the CSV header"))?
        .clone();
    let col = |want: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(want))
    };
    let (Some(c_emotion), Some(c_pixels)) = (col("emotion"), col("pixels")) else {
        bail!(
            "{name}:1: header is '{}'; expected the columns emotion,pixels and optionally Usage",
            headers.iter().collect::<Vec<_>>().join(",")
        );
    };
    let c_usage = col("usage");
    let mut rows = Vec::new();
    let mut report = LoadReport::default();
    for rec in rdr.records() {
        match rec {
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line());
                rows.push((line, r));
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                report.push(
                    IssueKind::MalformedRow,
                    format!("{name}:{line}"),
                    e.to_string(),
                );
            }
        }
    }
    let parsed: Vec<(u64, Result<CsvFace, String>)> = rows
        .par_iter()
        .map(|(line, r)| {
            (
                *line,
                parse_row(r, c_emotion, c_pixels, c_usage, classes.len()),
            )
        })
        .collect();
    let mut data = FerData {
        classes: classes.to_vec(),
        ..FerData::default()
    };
    for (line, res) in parsed {
        match res {
            Ok((label, origin, px)) => {
                let set = if origin == Origin::Training {
                    &mut data.train
                } else {
                    &mut data.test
                };
                set.push(&px, label, origin, format!("{name}:{line}"));
            }
            Err(detail) => report.push(IssueKind::MalformedRow, format!("{name}:{line}"), detail),
        }
    }
    let mut digest = blake3::Hasher::new();
    digest.update(format!("fer-content-v{DIGEST_VERSION}\n").as_bytes());
    digest.update(&bytes);
    data.digest = digest.finalize().to_hex().to_string();
    data.report = report;
    Ok(data)
}

/// One parsed CSV row: label, origin, pixels.
type CsvFace = (u8, Origin, Vec<u8>);

fn parse_row(
    r: &csv::StringRecord,
    c_emotion: usize,
    c_pixels: usize,
    c_usage: Option<usize>,
    k: usize,
) -> Result<CsvFace, String> {
    let field = |c: usize, what: &str| {
        r.get(c)
            .ok_or_else(|| format!("{} field(s), no `{what}` column", r.len()))
    };
    let e = field(c_emotion, "emotion")?.trim();
    let label: u8 = e
        .parse()
        .ok()
        .filter(|&l: &u8| (l as usize) < k)
        .ok_or_else(|| format!("emotion '{e}' is not an integer 0..={}", k - 1))?;
    let origin = match c_usage {
        None => Origin::Training,
        Some(c) => match field(c, "Usage")?.trim() {
            "Training" => Origin::Training,
            "PublicTest" => Origin::PublicTest,
            "PrivateTest" => Origin::PrivateTest,
            other => {
                return Err(format!(
                    "Usage '{other}' is not one of Training, PublicTest, PrivateTest"
                ))
            }
        },
    };
    let mut px = Vec::with_capacity(PIXELS);
    for (i, tok) in field(c_pixels, "pixels")?
        .split_ascii_whitespace()
        .enumerate()
    {
        // Stop at the first extra pixel: a row's size is not the file's to set.
        if i == PIXELS {
            return Err(format!(
                "more than {PIXELS} pixels, expected {PIXELS} (48x48)"
            ));
        }
        let v: u8 = tok
            .parse()
            .map_err(|_| format!("pixel {} is '{tok}', expected an integer 0..=255", i + 1))?;
        px.push(v);
    }
    if px.len() != PIXELS {
        return Err(format!("{} pixels, expected {PIXELS} (48x48)", px.len()));
    }
    Ok((label, origin, px))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_same_size_rewrite_with_its_mtime_restored_changes_the_stamp() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.jpg");
        std::fs::write(&p, b"one").unwrap();
        let before = std::fs::metadata(&p).unwrap();
        assert_eq!(stamp(&before), stamp(&std::fs::metadata(&p).unwrap()));
        // Past the file system's timestamp granularity.
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::write(&p, b"two").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(before.modified().unwrap())
            .unwrap();
        let after = std::fs::metadata(&p).unwrap();
        assert_eq!(after.len(), before.len());
        assert_eq!(after.modified().unwrap(), before.modified().unwrap());
        assert_ne!(stamp(&before), stamp(&after));
    }

    #[test]
    fn a_report_takes_structure_from_the_scan_and_only_decoding_findings_from_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let mut scan = LoadReport::default();
        scan.push(IssueKind::UnexpectedFile, "train/notes.txt", "now");
        let mut cached = LoadReport::default();
        cached.push(IssueKind::UnknownFolder, "train/memes", "gone since");
        cached.push(IssueKind::CorruptImage, "train/angry/x.jpg", "bad bytes");
        cached.push(IssueKind::EmptyClass, "train/sad", "no usable images");
        let mut data = FerData {
            classes: fer2013::classes(),
            ..FerData::default()
        };
        data.train.push(
            &[0; PIXELS],
            0,
            Origin::Training,
            "train/angry/a.jpg".into(),
        );
        let r = folder_report(tmp.path(), scan, cached, &data);
        let got: Vec<(IssueKind, String)> = r
            .issues
            .iter()
            .map(|i| (i.kind, i.location.clone()))
            .collect();
        // angry has an image; every other class is empty now; no test/ folder.
        let mut want = vec![
            (IssueKind::CorruptImage, "train/angry/x.jpg".to_string()),
            (IssueKind::UnexpectedFile, "train/notes.txt".to_string()),
        ];
        for c in &fer2013::CLASSES[1..] {
            want.push((IssueKind::EmptyClass, format!("train/{c}")));
        }
        want.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        assert_eq!(got, want);
    }
}

#[cfg(test)]
mod csv_tests {
    //! The challenge CSV parser against damaged and random files: every
    //! good row is read, every bad row is an issue at its line, and no
    //! content reaches a panic.
    use super::*;
    use proptest::prelude::*;

    /// How a generated row is damaged (None: a good row).
    #[derive(Clone, Copy, Debug)]
    enum Damage {
        Label,
        Usage,
        FewPixels,
        ManyPixels,
        Token,
        NoPixels,
    }

    fn row(label: u8, usage: &str, seed: u8, damage: Option<Damage>) -> String {
        let mut px: Vec<String> = (0..PIXELS)
            .map(|i| ((i as u32 * 7 + seed as u32) % 256).to_string())
            .collect();
        let (mut label, mut usage) = (label.to_string(), usage.to_string());
        match damage {
            None => {}
            Some(Damage::Label) => label = "7".into(),
            Some(Damage::Usage) => usage = "Validation".into(),
            Some(Damage::FewPixels) => {
                px.pop();
            }
            Some(Damage::ManyPixels) => px.push("1".into()),
            Some(Damage::Token) => px[100] = "256".into(),
            Some(Damage::NoPixels) => return format!("{label}\n"),
        }
        format!("{label},{},{usage}\n", px.join(" "))
    }

    fn read(text: &[u8]) -> Result<FerData> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fer2013.csv");
        std::fs::write(&path, text).unwrap();
        read_csv(&path, &fer2013::classes())
    }

    /// What any load must hold: whole images with labels in range.
    fn consistent(d: &FerData) -> bool {
        [&d.train, &d.test].iter().all(|s| {
            s.pixels.len() == s.len() * PIXELS
                && s.origins.len() == s.len()
                && s.labels
                    .iter()
                    .all(|&l| (l as usize) < fer2013::CLASSES.len())
        })
    }

    fn damage() -> impl Strategy<Value = Option<Damage>> {
        prop_oneof![
            4 => Just(None),
            1 => prop::sample::select(vec![
                Damage::Label,
                Damage::Usage,
                Damage::FewPixels,
                Damage::ManyPixels,
                Damage::Token,
                Damage::NoPixels,
            ])
            .prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn good_rows_load_and_each_bad_row_is_an_issue_at_its_line(
            rows in prop::collection::vec(
                (0u8..7, prop::sample::select(vec!["Training", "PublicTest", "PrivateTest"]), any::<u8>(), damage()),
                1..12,
            ),
        ) {
            let mut text = "emotion,pixels,Usage\n".to_string();
            for (label, usage, seed, d) in &rows {
                text += &row(*label, usage, *seed, *d);
            }
            let d = read(text.as_bytes()).unwrap();
            prop_assert!(consistent(&d));
            let good: Vec<_> = rows.iter().filter(|r| r.3.is_none()).collect();
            let train = good.iter().filter(|r| r.1 == "Training").count();
            prop_assert_eq!(d.train.len(), train);
            prop_assert_eq!(d.test.len(), good.len() - train);
            let bad: Vec<String> = rows
                .iter()
                .enumerate()
                .filter(|(_, r)| r.3.is_some())
                .map(|(i, _)| format!("fer2013.csv:{}", i + 2))
                .collect();
            let at: Vec<String> = d.report.issues.iter().map(|i| i.location.clone()).collect();
            prop_assert_eq!(at, bad);
        }

        #[test]
        fn damaged_bytes_load_consistently_or_fail(
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in prop::option::of(any::<prop::sample::Index>()),
        ) {
            let mut bytes = "emotion,pixels,Usage\n".to_string().into_bytes();
            for i in 0..3u8 {
                bytes.extend(row(i, "Training", i, None).into_bytes());
            }
            for (i, v) in flips {
                let i = i.index(bytes.len());
                bytes[i] = v;
            }
            if let Some(c) = cut {
                bytes.truncate(c.index(bytes.len()));
            }
            if let Ok(d) = read(&bytes) {
                prop_assert!(consistent(&d));
            }
        }

        #[test]
        fn random_bytes_load_consistently_or_fail(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(d) = read(&bytes) {
                prop_assert!(consistent(&d));
            }
        }
    }
}
