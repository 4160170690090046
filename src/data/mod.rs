//! Labelled face data: loading (one folder per class, as FER-2013's Kaggle
//! layout, or the challenge CSV), conversion to the stored 48x48 grey, the
//! content digest and decode cache, the validation split and cross-validation
//! folds, quality flags, augmentation and the prefetching batch loader.
//! FER-2013's classes and statistics are its defaults ([`fer2013`]). Nothing
//! here knows about models.

pub mod augment;
pub mod cache;
pub mod classmap;
pub mod config;
pub mod corrupt;
pub mod folds;
pub mod issues;
pub mod load;
pub mod loader;
pub mod quality;
pub mod sampler;
pub mod split;
pub mod stats;

use serde::{Deserialize, Serialize};

pub use augment::AugmentConfig as AugmentCfg;
pub use config::{Convert, DataConfig, DataFormat};
pub use issues::{BadInputPolicy, Issue, IssueKind, LoadReport};
pub use load::{is_test_only, load, load_test_folder, missing_dataset_help, Loaded};

/// Stored image side in pixels. Every data set is kept as 48x48 8-bit
/// grey, FER-2013's own form and the models' input: images of another size
/// or colour are converted on load when `data.convert` allows it (see
/// [`config::Convert`]), so one decoded set, cache and model input serve
/// every data set.
pub const SIDE: usize = 48;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;

/// FER-2013's defaults: its classes in the challenge's label order and its
/// training pixel statistics. A data set whose class folders are these seven
/// is FER-2013 and takes this order; any other takes its own.
pub mod fer2013 {
    /// Class names, indexed by the challenge's label ids (the CSV `emotion`
    /// column). Kaggle folders are matched by name, not by their sorted order.
    pub const CLASSES: [&str; 7] = [
        "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
    ];
    /// The classes a report singles out: the rarest (disgust, 1.5% of
    /// train) and the most confused (fear).
    pub const HARD: [&str; 2] = ["disgust", "fear"];
    /// Train pixel mean and standard deviation in [0, 1].
    pub const MEAN: f32 = 0.5077;
    pub const STD: f32 = 0.2550;

    /// The class names as owned strings, in label order.
    pub fn classes() -> Vec<String> {
        CLASSES.iter().map(|s| s.to_string()).collect()
    }

    /// Whether `names` are FER-2013's seven classes, in any order and case.
    pub fn is_fer(names: &[String]) -> bool {
        names.len() == CLASSES.len()
            && CLASSES
                .iter()
                .all(|c| names.iter().any(|n| n.eq_ignore_ascii_case(c)))
    }
}

/// Where an image came from in the original challenge, read from the Kaggle
/// file-name prefix or the CSV's `Usage` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Origin {
    Training,
    PublicTest,
    PrivateTest,
    /// A file name without a known prefix (a re-packaged data set).
    Unknown,
    /// A named group of the test split (`data.test_groups`): its name is
    /// the set's `group_names[i]`.
    Group(u16),
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
            Origin::Group(_) => "group",
        }
    }
}

/// Index of `name` in `classes`: the exact name, else the one name equal to
/// it but for case (folders `Happy/` and `happy/` are one class).
pub fn class_index(classes: &[String], name: &str) -> Option<usize> {
    classes
        .iter()
        .position(|c| c == name)
        .or_else(|| classes.iter().position(|c| c.eq_ignore_ascii_case(name)))
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
    /// The names of `Origin::Group` origins (`data.test_groups`), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_names: Vec<String>,
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

    /// Images per class, for `k` classes.
    pub fn class_counts(&self, k: usize) -> Vec<usize> {
        let mut counts = vec![0; k];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// The subset at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut out = ImageSet {
            pixels: Vec::with_capacity(indices.len() * PIXELS),
            group_names: self.group_names.clone(),
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

    /// The name an origin of this set is reported under: a test group's
    /// own name, or the FER-2013 half's.
    pub fn origin_name(&self, o: Origin) -> String {
        match o {
            Origin::Group(i) => self
                .group_names
                .get(i as usize)
                .cloned()
                .unwrap_or_else(|| format!("group {i}")),
            o => o.name().to_string(),
        }
    }

    /// Whether the test split is reported per group: FER-2013's halves or
    /// `data.test_groups`.
    pub fn has_groups(&self) -> bool {
        self.origins.iter().any(|&o| {
            matches!(
                o,
                Origin::PublicTest | Origin::PrivateTest | Origin::Group(_)
            )
        })
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
    /// Class names in label order: `data.classes`, FER-2013's order for its
    /// seven folders, else the class folders' names sorted (as torchvision's
    /// `ImageFolder` does).
    pub classes: Vec<String>,
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
