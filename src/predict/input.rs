//! What `fer predict` was pointed at: files and folders (walked
//! recursively, in path order) expanded into images and videos. A file is a
//! video by its extension; anything else in a folder is tried as an image
//! and, if it is not one, skipped with a warning.

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

/// Every input, in the order given and path order within folders. A path
/// that does not exist, or a folder with no file at all, is an error before
/// anything is written.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<Input>> {
    if paths.is_empty() {
        bail!("no input given: pass image files, video files or folders");
    }
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p)
            .with_context(|| format!("{}: no such file or folder", p.display()))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files)?;
            if files.is_empty() {
                bail!(
                    "{}: the folder holds no files; expected images (JPEG, PNG, ...) or videos ({})",
                    p.display(),
                    VIDEO_EXTENSIONS.join(", ")
                );
            }
            files.sort();
            let top = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "input".into());
            for f in files {
                let rel = f.strip_prefix(p).unwrap_or(&f);
                let name = Path::new(&top).join(rel).to_string_lossy().into_owned();
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
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| p.display().to_string()),
                path: p.clone(),
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))? {
        let e = e.with_context(|| format!("reading folder {}", dir.display()))?;
        let path = e.path();
        let ty = e.file_type()?;
        if ty.is_dir() {
            walk(&path, files)?;
        } else if ty.is_file() || (ty.is_symlink() && path.is_file()) {
            files.push(path);
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
        let got = expand(std::slice::from_ref(&d)).unwrap();
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
    fn missing_paths_and_empty_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = expand(&[dir.path().join("nope.jpg")]).unwrap_err();
        assert!(format!("{e:#}").contains("nope.jpg: no such file"), "{e:#}");
        let e = expand(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(format!("{e:#}").contains("holds no files"), "{e:#}");
    }
}
