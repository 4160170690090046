//! What `fer predict` was pointed at: files and folders (walked
//! recursively, in path order) expanded into images and videos. A file is a
//! video by its extension; anything else in a folder is tried as an image
//! and, if it is not one, skipped with a warning. Links to folders are
//! followed once (a link back into a walked folder is not); FIFOs, sockets
//! and devices are skipped by name. Names keep bytes that are not UTF-8 as
//! `\xNN`, so two files never share a name in the outputs.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Extensions read as video through ffmpeg.
pub const VIDEO_EXTENSIONS: [&str; 12] = [
    "avi", "mp4", "mkv", "webm", "mov", "m4v", "mpg", "mpeg", "wmv", "flv", "ogv", "y4m",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Image,
    Video,
}

#[derive(Clone, Debug)]
pub struct Input {
    pub path: PathBuf,
    pub kind: Kind,
    /// The name its outputs get: the path below the folder it was found in
    /// (with the folder's own name), or the file name.
    pub name: String,
}

fn kind_of(path: &Path) -> Kind {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if VIDEO_EXTENSIONS.contains(&ext.as_str()) {
        Kind::Video
    } else {
        Kind::Image
    }
}

/// A path or name as text, with each byte that is not UTF-8 written as
/// `\xNN` (where `to_string_lossy` would make two names one).
pub fn shown(s: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in s.as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// What a walk passed over, with why.
pub type Passed = Vec<(PathBuf, String)>;

/// Every input, in the order given and path order within folders, and what
/// the folders held that is not read (named, with why). A path that does
/// not exist, a special file named directly, or a folder with no file at
/// all, is an error before anything is written.
pub fn expand(paths: &[PathBuf]) -> Result<(Vec<Input>, Passed)> {
    if paths.is_empty() {
        bail!("no input given: pass image files, video files or folders");
    }
    let mut out = Vec::new();
    let mut passed = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p)
            .with_context(|| format!("{}: no such file or folder", shown(p.as_os_str())))?;
        if !meta.is_dir() && !meta.is_file() {
            bail!(
                "{}: not a regular file (a FIFO, socket or device); pass image or video files or folders",
                shown(p.as_os_str())
            );
        }
        if meta.is_dir() {
            let mut files = Vec::new();
            let mut seen = std::collections::HashSet::new();
            walk(p, &mut files, &mut passed, &mut seen)?;
            if files.is_empty() {
                bail!(
                    "{}: the folder holds no files; expected images (JPEG, PNG, ...) or videos ({})",
                    p.display(),
                    VIDEO_EXTENSIONS.join(", ")
                );
            }
            files.sort();
            let top = p.file_name().map(shown).unwrap_or_else(|| "input".into());
            for f in files {
                let rel = f.strip_prefix(p).unwrap_or(&f);
                let name = format!("{top}/{}", shown(rel.as_os_str()));
                out.push(Input {
                    kind: kind_of(&f),
                    path: f,
                    name,
                });
            }
        } else {
            out.push(Input {
                kind: kind_of(p),
                name: p
                    .file_name()
                    .map(shown)
                    .unwrap_or_else(|| shown(p.as_os_str())),
                path: p.clone(),
            });
        }
    }
    Ok((out, passed))
}

/// Files under `dir`, following links to folders once: `seen` holds the
/// folders walked (canonical), so a link back into one is passed over.
fn walk(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    passed: &mut Passed,
    seen: &mut std::collections::HashSet<PathBuf>,
) -> Result<()> {
    let here = std::fs::canonicalize(dir)
        .with_context(|| format!("reading folder {}", shown(dir.as_os_str())))?;
    if !seen.insert(here) {
        passed.push((
            dir.to_path_buf(),
            "a link to a folder already walked; not walked twice".into(),
        ));
        return Ok(());
    }
    let what = || format!("reading folder {}", shown(dir.as_os_str()));
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).with_context(what)? {
        let e = e.with_context(what)?;
        entries.push((e.file_type()?.is_symlink(), e.path()));
    }
    // Real entries before links, each in path order: a folder reached both
    // ways is walked under its own name.
    entries.sort();
    for (_, path) in entries {
        // Through links: a link is what it points at.
        let Ok(meta) = std::fs::metadata(&path) else {
            passed.push((path, "a broken link".into()));
            continue;
        };
        if meta.is_dir() {
            walk(&path, files, passed, seen)?;
        } else if meta.is_file() {
            files.push(path);
        } else {
            passed.push((path, "not a regular file (a FIFO, socket or device)".into()));
        }
    }
    Ok(())
}

/// A file name safe to write under the output folder: the input's name with
/// folder separators flattened.
pub fn flat_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '/' | '\\' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_in_path_order_and_videos_told_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("shots");
        std::fs::create_dir_all(d.join("b")).unwrap();
        for f in ["b/z.png", "a.MP4", "c.txt"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let got = expand(std::slice::from_ref(&d)).unwrap().0;
        let names: Vec<(&str, Kind)> = got.iter().map(|i| (i.name.as_str(), i.kind)).collect();
        assert_eq!(
            names,
            [
                ("shots/a.MP4", Kind::Video),
                ("shots/b/z.png", Kind::Image),
                ("shots/c.txt", Kind::Image)
            ]
        );
        assert_eq!(flat_name("shots/b/z.png"), "shots_b_z.png");
    }

    #[test]
    fn links_special_files_and_odd_names_are_followed_or_named() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let (d, other) = (dir.path().join("in"), dir.path().join("other"));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(d.join("sub/a.png"), b"x").unwrap();
        std::fs::write(other.join("b.png"), b"x").unwrap();
        symlink(&other, d.join("ext")).unwrap();
        symlink(d.join("sub"), d.join("again")).unwrap();
        symlink(&d, d.join("sub/back")).unwrap();
        let fifo = std::ffi::CString::new(d.join("pipe").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        for raw in [&b"x\xff.png"[..], &b"x\xfe.png"[..]] {
            std::fs::write(d.join(std::ffi::OsStr::from_bytes(raw)), b"x").unwrap();
        }
        let (got, passed) = expand(std::slice::from_ref(&d)).unwrap();
        let names: Vec<&str> = got.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "in/ext/b.png",
                "in/sub/a.png",
                "in/x\\xFE.png",
                "in/x\\xFF.png"
            ]
        );
        let why = |name: &str| {
            passed
                .iter()
                .find(|(p, _)| p.ends_with(name))
                .map(|(_, w)| w.as_str())
                .unwrap_or_else(|| panic!("{name} not named: {passed:?}"))
        };
        assert!(why("pipe").contains("not a regular file"));
        assert!(why("again").contains("already walked"));
        assert!(why("back").contains("already walked"));
        // A FIFO named directly is refused, not opened.
        let e = expand(&[d.join("pipe")]).unwrap_err();
        assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");
    }

    #[test]
    fn missing_paths_and_empty_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = expand(&[dir.path().join("nope.jpg")]).unwrap_err();
        assert!(format!("{e:#}").contains("nope.jpg: no such file"), "{e:#}");
        let e = expand(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(format!("{e:#}").contains("holds no files"), "{e:#}");
    }
}
