//! Labels of one data set read as another's classes: `fer eval --class-map
//! contempt=-,joy=happy,...`. Each class of the data is mapped to a target
//! class by the map, else by its own name, else dropped; every image dropped
//! is counted by class, so a score on another data set says what it left out.

use super::{class_index, FerData, ImageSet};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `from=to` pairs as given; `to` is `-` (or empty) to drop `from`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassMap {
    pub pairs: Vec<(String, Option<String>)>,
    /// Where the pairs were read from (`--class-map` or a file), for errors.
    pub source: String,
}

/// What a mapping did to a data set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Mapped {
    /// Each data class and the target class it became (None: dropped).
    pub classes: Vec<(String, Option<String>)>,
    /// Images dropped per data class (train and test together), classes
    /// with none left out.
    pub dropped: Vec<(String, usize)>,
    /// Images kept.
    pub kept: usize,
}

impl ClassMap {
    /// `a=b,c=-` on the command line, or a file of such pairs, one or more
    /// to a line (`#` starts a comment). An existing file wins.
    pub fn parse(arg: &str) -> Result<ClassMap> {
        let path = Path::new(arg);
        let (text, source) = if !arg.contains('=') && path.is_file() {
            let t = std::fs::read_to_string(path)
                .with_context(|| format!("reading --class-map {}", path.display()))?;
            (t, path.display().to_string())
        } else {
            (arg.to_string(), "--class-map".to_string())
        };
        let mut pairs: Vec<(String, Option<String>)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("");
            for item in line.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let at = match source.as_str() {
                    "--class-map" => source.clone(),
                    file => format!("{file}:{}", n + 1),
                };
                let Some((from, to)) = item.split_once('=') else {
                    bail!("{at}: '{item}' is not a pair; expected DATA_CLASS=MODEL_CLASS (or DATA_CLASS=- to drop it)");
                };
                let (from, to) = (from.trim(), to.trim());
                if from.is_empty() {
                    bail!("{at}: '{item}' names no data class before '='");
                }
                if pairs.iter().any(|(f, _)| f.eq_ignore_ascii_case(from)) {
                    bail!("{at}: data class '{from}' is mapped twice");
                }
                let to = (!to.is_empty() && to != "-").then(|| to.to_string());
                pairs.push((from.to_string(), to));
            }
        }
        if pairs.is_empty() {
            bail!("{source}: no DATA_CLASS=MODEL_CLASS pairs");
        }
        Ok(ClassMap { pairs, source })
    }

    /// Relabels `data` (in its own classes) into `targets`, dropping what
    /// maps to nothing. Refused: a pair naming a class the data lacks or a
    /// target the model lacks, or a mapping that keeps no image.
    pub fn apply(&self, data: &mut FerData, targets: &[String]) -> Result<Mapped> {
        for (from, to) in &self.pairs {
            if class_index(&data.classes, from).is_none() {
                bail!(
                    "{}: '{from}' is not a class of the data set (its classes: {})",
                    self.source,
                    data.classes.join(", ")
                );
            }
            if let Some(to) = to {
                if class_index(targets, to).is_none() {
                    bail!(
                        "{}: '{to}' is not a class of the model (its classes: {})",
                        self.source,
                        targets.join(", ")
                    );
                }
            }
        }
        let to: Vec<Option<u8>> = data
            .classes
            .iter()
            .map(|c| {
                match self.pairs.iter().find(|(f, _)| f.eq_ignore_ascii_case(c)) {
                    Some((_, Some(t))) => class_index(targets, t),
                    Some((_, None)) => None,
                    None => class_index(targets, c),
                }
                .map(|k| k as u8)
            })
            .collect();
        let mut dropped = vec![0usize; data.classes.len()];
        for set in [&mut data.train, &mut data.test] {
            *set = relabel(set, &to, &mut dropped);
        }
        let kept = data.train.len() + data.test.len();
        if kept == 0 {
            bail!(
                "{}: no image of the data set maps to a class of the model ({})",
                self.source,
                targets.join(", ")
            );
        }
        let mapped = Mapped {
            classes: data
                .classes
                .iter()
                .zip(&to)
                .map(|(c, t)| (c.clone(), t.map(|k| targets[k as usize].clone())))
                .collect(),
            dropped: data
                .classes
                .iter()
                .zip(&dropped)
                .filter(|(_, &n)| n > 0)
                .map(|(c, &n)| (c.clone(), n))
                .collect(),
            kept,
        };
        data.classes = targets.to_vec();
        Ok(mapped)
    }
}

/// The images of `set` whose class maps somewhere, relabelled; the rest
/// counted in `dropped` by their old class.
fn relabel(set: &ImageSet, to: &[Option<u8>], dropped: &mut [usize]) -> ImageSet {
    let keep: Vec<usize> = (0..set.len())
        .filter(|&i| {
            let l = set.labels[i] as usize;
            let k = to[l].is_some();
            if !k {
                dropped[l] += 1;
            }
            k
        })
        .collect();
    let mut out = set.select(&keep);
    for l in &mut out.labels {
        // Every kept label maps somewhere (filtered above).
        *l = to[*l as usize].unwrap_or(*l);
    }
    out
}

impl Mapped {
    /// One line for the terminal: what became what and what was dropped.
    pub fn summary(&self) -> String {
        let moved: Vec<String> = self
            .classes
            .iter()
            .filter_map(|(c, t)| t.as_ref().filter(|t| *t != c).map(|t| format!("{c}→{t}")))
            .collect();
        let dropped: Vec<String> = self
            .dropped
            .iter()
            .map(|(c, n)| format!("{c} ({n} images)"))
            .collect();
        format!(
            "class map: {} images kept; mapped {}; dropped {}",
            self.kept,
            if moved.is_empty() {
                "none".into()
            } else {
                moved.join(", ")
            },
            if dropped.is_empty() {
                "none".into()
            } else {
                dropped.join(", ")
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Origin, PIXELS};

    fn data(classes: &[&str], labels: &[u8]) -> FerData {
        let mut d = FerData {
            classes: classes.iter().map(|s| s.to_string()).collect(),
            ..FerData::default()
        };
        for (i, &l) in labels.iter().enumerate() {
            d.test.push(
                &[i as u8; PIXELS],
                l,
                Origin::Unknown,
                format!("test/{i}.png"),
            );
        }
        d
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn classes_map_by_pair_then_by_name_and_the_rest_are_dropped_and_counted() {
        // joy and amusement merge into happy; Sad keeps its name but for case;
        // contempt is dropped by the map, calm by having no model class.
        let mut d = data(
            &["amusement", "calm", "contempt", "joy", "Sad"],
            &[0, 1, 2, 3, 4, 3, 2, 2],
        );
        let map = ClassMap::parse("joy=happy, amusement=happy,contempt=-").unwrap();
        let model = names(&["angry", "happy", "sad"]);
        let m = map.apply(&mut d, &model).unwrap();
        assert_eq!(d.classes, model);
        assert_eq!(d.test.labels, vec![1, 1, 2, 1]);
        assert_eq!(
            d.test.sources,
            vec!["test/0.png", "test/3.png", "test/4.png", "test/5.png"]
        );
        assert_eq!(d.test.image(1), &[3u8; PIXELS][..]);
        assert_eq!(
            m.dropped,
            vec![("calm".to_string(), 1), ("contempt".to_string(), 3)]
        );
        assert_eq!(m.kept, 4);
        assert!(m.summary().contains("joy→happy"), "{}", m.summary());
    }

    #[test]
    fn a_pair_naming_a_missing_class_is_refused_naming_it() {
        let model = names(&["angry", "happy"]);
        let err = ClassMap::parse("smile=happy")
            .unwrap()
            .apply(&mut data(&["joy", "anger"], &[0]), &model)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'smile' is not a class of the data set (its classes: joy, anger)"),
            "{err}"
        );
        let err = ClassMap::parse("joy=glad")
            .unwrap()
            .apply(&mut data(&["joy", "anger"], &[0]), &model)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'glad' is not a class of the model"), "{err}");
        let err = ClassMap::parse("joy").unwrap_err().to_string();
        assert!(err.contains("'joy' is not a pair"), "{err}");
        let err = ClassMap::parse("joy=happy,Joy=sad")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mapped twice"), "{err}");
    }

    #[test]
    fn a_map_file_names_its_line_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("map.txt");
        std::fs::write(&p, "# joy is happy\njoy=happy\nanger angry\n").unwrap();
        let err = ClassMap::parse(p.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("map.txt:3: 'anger angry' is not a pair"),
            "{err}"
        );
    }
}
