//! FER-2013 data: loading (Kaggle folders or the challenge CSV), the content
//! digest and decode cache, the validation split, quality flags, augmentation
//! and the prefetching batch loader. Nothing here knows about models.

pub mod augment;
pub mod cache;
pub mod config;
pub mod corrupt;
pub mod issues;
pub mod load;
pub mod loader;
pub mod quality;
pub mod sampler;
pub mod split;
pub mod stats;

use serde::{Deserialize, Serialize};

pub use augment::AugmentConfig as AugmentCfg;
pub use config::{DataConfig, DataFormat};
pub use issues::{BadInputPolicy, Issue, IssueKind, LoadReport};
pub use load::{is_test_only, load, load_test_folder, missing_dataset_help, Loaded};

/// Image side in pixels; every FER-2013 face is 48x48 grayscale.
pub const SIDE: usize = 48;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;
/// Class names, indexed by the challenge's label ids (the CSV `emotion`
/// column). Kaggle folders are matched by name, not by their sorted order.
pub const CLASSES: [&str; 7] = [
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
];
/// Number of classes.
pub const NUM_CLASSES: usize = CLASSES.len();

/// Where an image came from in the original challenge, read from the Kaggle
/// file-name prefix or the CSV's `Usage` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Origin {
    Training,
    PublicTest,
    PrivateTest,
    /// A file name without a known prefix (a re-packaged data set).
    Unknown,
}

impl Origin {
    pub fn from_file_name(name: &str) -> Origin {
        if name.starts_with("Training") {
            Origin::Training
        } else if name.starts_with("PublicTest") {
            Origin::PublicTest
        } else if name.starts_with("PrivateTest") {
            Origin::PrivateTest
        } else {
            Origin::Unknown
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Origin::Training => "Training",
            Origin::PublicTest => "PublicTest",
            Origin::PrivateTest => "PrivateTest",
            Origin::Unknown => "Unknown",
        }
    }
}

/// Class index of a name, as used by the folder layout.
pub fn class_index(name: &str) -> Option<usize> {
    CLASSES.iter().position(|c| *c == name)
}

/// A set of decoded faces: one contiguous `u8` buffer of `len() * PIXELS`
/// bytes, row-major, plus labels and provenance. It converts to an
/// `[N, 1, 48, 48]` u8 tensor without copying pixel by pixel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageSet {
    #[serde(skip)]
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub origins: Vec<Origin>,
    /// Relative file path or `file.csv:LINE`, for messages and error galleries.
    pub sources: Vec<String>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * PIXELS..(i + 1) * PIXELS]
    }

    pub fn push(&mut self, pixels: &[u8], label: u8, origin: Origin, source: String) {
        debug_assert_eq!(pixels.len(), PIXELS);
        self.pixels.extend_from_slice(pixels);
        self.labels.push(label);
        self.origins.push(origin);
        self.sources.push(source);
    }

    /// Images per class.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// The subset at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut out = ImageSet {
            pixels: Vec::with_capacity(indices.len() * PIXELS),
            ..Default::default()
        };
        for &i in indices {
            out.push(
                self.image(i),
                self.labels[i],
                self.origins[i],
                self.sources[i].clone(),
            );
        }
        out
    }

    /// The images whose origin is `origin`.
    pub fn with_origin(&self, origin: Origin) -> ImageSet {
        let idx: Vec<usize> = (0..self.len())
            .filter(|&i| self.origins[i] == origin)
            .collect();
        self.select(&idx)
    }

    /// Origins present, in order.
    pub fn origins_present(&self) -> Vec<Origin> {
        let mut o: Vec<Origin> = self.origins.clone();
        o.sort();
        o.dedup();
        o
    }

    /// The pixels as an `[N, 1, 48, 48]` u8 tensor (one copy).
    pub fn to_tensor(&self) -> tch::Tensor {
        tch::Tensor::from_slice(&self.pixels).view([self.len() as i64, 1, SIDE as i64, SIDE as i64])
    }

    /// Labels as an `[N]` i64 tensor.
    pub fn labels_tensor(&self) -> tch::Tensor {
        let l: Vec<i64> = self.labels.iter().map(|&l| l as i64).collect();
        tch::Tensor::from_slice(&l)
    }
}

/// The whole data set as loaded: train (before the validation split) and test.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FerData {
    pub train: ImageSet,
    pub test: ImageSet,
    /// blake3 digest of the data set's content (file names and bytes).
    pub digest: String,
    pub report: LoadReport,
}

impl FerData {
    /// Short form of the digest for logs and tags.
    pub fn short_digest(&self) -> &str {
        &self.digest[..self.digest.len().min(12)]
    }
}
