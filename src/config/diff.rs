//! What a resume may change. A resumed run or sweep continues the recipe it
//! recorded; this module lists how a config now differs from that record
//! (key by dotted key) and refuses every difference except the few that
//! are a real need (more epochs or trials, threads, the tracking server),
//! and those only when asked for with `--set`.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One key whose value differs between the record and the config now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub key: String,
    pub was: Value,
    pub now: Value,
    /// Asked for with `--set` (else: the file was edited).
    pub explicit: bool,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} recorded, {} now ({})",
            self.key,
            show(&self.was),
            show(&self.now),
            if self.explicit {
                "--set"
            } else {
                "the file was edited"
            }
        )
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        v => v.to_string(),
    }
}

/// Every leaf that differs between `was` and `now`, by dotted key, skipping
/// keys under any of `ignore`. `overrides` (`key=value`) mark the changes
/// asked for explicitly.
pub fn changes(
    was: &impl Serialize,
    now: &impl Serialize,
    overrides: &[String],
    ignore: &[&str],
) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(
        "",
        &serde_json::to_value(was)?,
        &serde_json::to_value(now)?,
        &mut out,
    );
    let asked: Vec<&str> = overrides
        .iter()
        .filter_map(|o| o.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    out.retain(|c| !ignore.iter().any(|i| under(&c.key, i)));
    for c in &mut out {
        c.explicit = asked.iter().any(|k| under(&c.key, k));
    }
    Ok(out)
}

/// A recorded config as this version reads it: a key added since the
/// record was written takes its default, which is what the recorded run did
/// without it, so it is no difference. A record this version cannot read
/// (a later version's key) is compared as it is.
pub fn as_read<T: Serialize + serde::de::DeserializeOwned>(recorded: Value) -> Value {
    serde_json::from_value::<T>(recorded.clone())
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or(recorded)
}

/// `key` is `prefix` or lies under it.
fn under(key: &str, prefix: &str) -> bool {
    key == prefix
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

fn walk(prefix: &str, was: &Value, now: &Value, out: &mut Vec<Change>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    // A section that is absent on one side (null) differs leaf by leaf.
    let empty = serde_json::Map::new();
    let section = |v: &Value, other: &Value| match (v, other) {
        (Value::Object(m), _) => Some(m.clone()),
        (Value::Null, Value::Object(_)) => Some(empty.clone()),
        _ => None,
    };
    match (section(was, now), section(now, was)) {
        (Some(a), Some(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                walk(&join(k), x, y, out);
            }
        }
        _ if same(was, now) => {}
        _ => out.push(Change {
            key: prefix.to_string(),
            was: was.clone(),
            now: now.clone(),
            explicit: false,
        }),
    }
}

/// Equal values; numbers compare by value (1 and 1.0 are the same).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Accepts `changes` if each one is under a key of `may_change` and was
/// asked for with `--set`; else refuses, listing every difference.
pub fn judge(what: &str, changes: Vec<Change>, may_change: &[&str]) -> Result<Vec<Change>> {
    let refused = changes
        .iter()
        .filter(|c| !(c.explicit && may_change.iter().any(|m| under(&c.key, m))))
        .count();
    if refused == 0 {
        return Ok(changes);
    }
    let list: String = changes.iter().map(|c| format!("\n  {c}")).collect();
    anyhow::bail!(
        "{what} would not resume the same recipe; it differs from the recorded one in:{list}\n\
         A resume may change only {} and only with --set; restore the rest, or start a new run",
        may_change.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_are_listed_by_dotted_key() {
        let was = json!({"train": {"epochs": 10, "lr": 0.001}, "name": "a", "tracking": null});
        let now = json!({"train": {"epochs": 20.0, "lr": 0.001}, "name": "b",
                         "tracking": {"uri": "http://x"}});
        let c = changes(&was, &now, &["train.epochs=20".into()], &[]).unwrap();
        let keys: Vec<&str> = c.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["name", "tracking.uri", "train.epochs"]);
        assert!(c[2].explicit && !c[0].explicit);
        // Numbers compare by value.
        let c = changes(&json!({"x": 1}), &json!({"x": 1.0}), &[], &[]).unwrap();
        assert!(c.is_empty());
        // Ignored keys, and keys under them, are not differences.
        let c = changes(&was, &now, &[], &["name", "tracking"]).unwrap();
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_key_added_since_the_record_is_its_default_not_a_change() {
        #[derive(Serialize, Deserialize)]
        struct Now {
            epochs: u32,
            #[serde(default)]
            convert: String,
        }
        let now = Now {
            epochs: 10,
            convert: String::new(),
        };
        let old = json!({"epochs": 10});
        assert_eq!(changes(&old, &now, &[], &[]).unwrap().len(), 1);
        let read = as_read::<Now>(old);
        assert!(changes(&read, &now, &[], &[]).unwrap().is_empty());
        // What this version cannot read is compared as it is.
        let later = json!({"epochs": "ten"});
        assert_eq!(as_read::<Now>(later.clone()), later);
    }

    #[test]
    fn only_explicit_allowed_changes_pass() {
        let was = json!({"train": {"epochs": 10, "lr": 0.001}});
        let more = json!({"train": {"epochs": 20, "lr": 0.001}});
        let ok = changes(&was, &more, &["train.epochs=20".into()], &[]).unwrap();
        assert_eq!(judge("run", ok, &["train.epochs"]).unwrap().len(), 1);
        // The same change by editing the file is refused.
        let edited = changes(&was, &more, &[], &[]).unwrap();
        let e = judge("run", edited, &["train.epochs"]).unwrap_err();
        assert!(format!("{e}").contains("train.epochs: 10 recorded, 20 now (the file was edited)"));
        // A key outside the allowed set is refused even with --set.
        let lr = json!({"train": {"epochs": 10, "lr": 0.01}});
        let c = changes(&was, &lr, &["train.lr=0.01".into()], &[]).unwrap();
        let e = judge("run", c, &["train.epochs"]).unwrap_err();
        assert!(format!("{e}").contains("train.lr: 0.001 recorded, 0.01 now (--set)"));
        // "train.epochs_x" is not under "train.epochs".
        assert!(!under("train.epochs_x", "train.epochs"));
    }
}
