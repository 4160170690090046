//! The decode cache under `runs/cache/`: decoded pixels in one file named by
//! the data set's content digest, plus a small key file per stat fingerprint
//! (names, sizes, mtimes, ctimes and inodes) that points at it. A second load
//! stats the files, finds the key, and reads one contiguous file instead of
//! decoding ~36k JPEGs. It only replaces decoding: the caller's scan still
//! reports the folder's structure on every load. The cache is an
//! optimisation: any failure here falls back to decoding.

use super::{FerData, PIXELS};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"FERCACH1";

fn data_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join(format!("{digest}.fercache"))
}

fn key_path(dir: &Path, fingerprint: &str) -> PathBuf {
    dir.join(format!("key-{fingerprint}"))
}

/// The cached data set for this fingerprint, if present and intact.
pub fn lookup(dir: &Path, fingerprint: &str) -> Option<FerData> {
    let digest = std::fs::read_to_string(key_path(dir, fingerprint)).ok()?;
    match read(&data_path(dir, digest.trim())) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!("ignoring damaged cache for {}: {e}", digest.trim());
            None
        }
    }
}

/// Stores `data` under its digest and points `fingerprint` at it.
pub fn store(dir: &Path, fingerprint: &str, data: &FerData) {
    let res = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        write_atomic(&data_path(dir, &data.digest), |f| write(f, data))?;
        write_atomic(&key_path(dir, fingerprint), |f| {
            f.write_all(data.digest.as_bytes())
        })
    })();
    if let Err(e) = res {
        tracing::warn!("could not write the data cache in {}: {e}", dir.display());
    }
}

fn write_atomic(
    path: &Path,
    body: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        body(&mut f)?;
        f.flush()?;
    }
    std::fs::rename(&tmp, path)
}

fn write(f: &mut impl Write, data: &FerData) -> std::io::Result<()> {
    let header = serde_json::to_vec(data).map_err(std::io::Error::other)?;
    f.write_all(MAGIC)?;
    f.write_all(&(header.len() as u64).to_le_bytes())?;
    f.write_all(&header)?;
    f.write_all(&data.train.pixels)?;
    f.write_all(&data.test.pixels)
}

fn read(path: &Path) -> std::io::Result<FerData> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut f = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut head = [0u8; 16];
    f.read_exact(&mut head)?;
    if &head[..8] != MAGIC {
        return Err(bad("not a fer cache file"));
    }
    let hlen = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")) as usize;
    let mut header = vec![0u8; hlen];
    f.read_exact(&mut header)?;
    let mut data: FerData = serde_json::from_slice(&header).map_err(std::io::Error::other)?;
    // Read the pixels straight into their final buffers.
    data.train.pixels = vec![0u8; data.train.len() * PIXELS];
    f.read_exact(&mut data.train.pixels)?;
    data.test.pixels = vec![0u8; data.test.len() * PIXELS];
    f.read_exact(&mut data.test.pixels)?;
    if f.read(&mut [0u8; 1])? != 0 {
        return Err(bad("trailing bytes after the pixel data"));
    }
    Ok(data)
}
