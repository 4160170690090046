//! Named tensors with string metadata in safetensors files, written
//! atomically (temp file, then rename) so a kill never leaves half a file,
//! and read without trusting the file: any bytes give tensors or an error.

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn dtype(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        k => bail!("cannot store tensors of kind {k:?}"),
    })
}

fn kind(dtype: Dtype) -> Result<Kind> {
    Ok(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        d => bail!("unsupported tensor dtype {d:?}"),
    })
}

/// Writes `tensors` and `metadata` to `path` atomically.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.to_device(Device::Cpu).contiguous();
        let n = t.numel();
        let mut bytes = vec![0u8; n * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut bytes, n);
        let shape = t.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), dtype(t.kind())?, shape, bytes));
    }
    let views = owned
        .iter()
        .map(|(name, d, shape, bytes)| {
            Ok((name.as_str(), TensorView::new(*d, shape.clone(), bytes)?))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    safetensors::tensor::serialize_to_file(views, &Some(meta), &tmp)
        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Named tensors and metadata of a safetensors file.
pub struct Loaded {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

pub fn load(path: &Path) -> Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(path, &bytes)
}

/// [`load`] on the bytes of the file at `path` (named in errors).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Loaded> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors file: {e:?}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        // The safetensors header checks that each tensor's bytes match its
        // shape; a zero dimension still lets another be any size, which
        // libtorch would refuse, so bound the rank and every dimension here.
        let shape = view.shape();
        if shape.len() > MAX_RANK || shape.iter().any(|&d| d > MAX_DIM) {
            bail!(
                "{}: tensor '{name}' has shape {shape:?}; expected at most {MAX_RANK} dimensions of at most {MAX_DIM}",
                path.display()
            );
        }
        let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let kind =
            kind(view.dtype()).with_context(|| format!("{}: tensor '{name}'", path.display()))?;
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)
            .with_context(|| format!("{}: tensor '{name}'", path.display()))?;
        tensors.insert(name, t);
    }
    Ok(Loaded { tensors, metadata })
}

/// Bounds on a stored tensor's shape: far above any network here (rank 4,
/// dimensions in the thousands), far below what overflows libtorch's sizes.
const MAX_RANK: usize = 8;
const MAX_DIM: usize = 1 << 32;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A small valid file: two tensors and one metadata entry.
    fn sample() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let tensors = vec![
            (
                "a".to_string(),
                Tensor::from_slice(&[1f32, 2.0, 3.0, 4.0]).view([2, 2]),
            ),
            ("b".to_string(), Tensor::from_slice(&[7i64])),
        ];
        let md = [("k".to_string(), "v".to_string())].into();
        save(&path, &tensors, &md).unwrap();
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn a_written_file_reads_back() {
        let l = parse(Path::new("t"), &sample()).unwrap();
        assert_eq!(l.tensors["a"].size(), [2, 2]);
        assert_eq!(l.tensors["b"].int64_value(&[0]), 7);
        assert_eq!(l.metadata["k"], "v");
    }

    #[test]
    fn shapes_libtorch_cannot_hold_are_refused() {
        // Zero elements, so the bytes match, but a dimension past i64.
        let header =
            r#"{"z":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        let Err(err) = parse(Path::new("big.safetensors"), &bytes) else {
            panic!("a dimension past i64 was read");
        };
        let msg = format!("{err:#}");
        assert!(
            msg.contains("big.safetensors") && msg.contains("'z'"),
            "{msg}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_give_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assert!(parse(Path::new("r"), &bytes).is_err());
        }

        #[test]
        fn mutated_files_give_tensors_or_an_error(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = sample();
            for (i, v) in flips {
                let i = i.index(bytes.len());
                bytes[i] = v;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            let _ = parse(Path::new("m"), &bytes);
        }
    }
}
