//! Model files that lie: every metadata field out of range, tensors that do
//! not fit the metadata, int8 records that do not fit the tensors, random
//! and mutated bytes. Each is refused with an error naming the file and the
//! field or tensor, and none reaches a panic (a panic fails the test;
//! a libtorch abort would kill it).

use super::int8::{quantize_weight, LayerMeta, QuantMeta, META_KEY, SCALE_SUFFIX};
use super::{Classifier, ModelMeta, FORMAT};
use crate::data::augment::AugmentConfig;
use crate::data::{ImageSet, Origin, PIXELS};
use crate::models::layers::{Exec, LayerKind};
use crate::tensor_io;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// Input side of the tiny test network.
const SIZE: usize = 8;

/// A two-block CNN on 8x8 input: valid, and small enough to build per case.
fn meta() -> ModelMeta {
    ModelMeta {
        name: "tiny".into(),
        model: serde_json::from_value(json!({"kind": "cnn", "widths": [2, 4], "convs": 1}))
            .unwrap(),
        preprocess: AugmentConfig {
            size: SIZE,
            ..AugmentConfig::default().eval_only()
        },
        classes: crate::data::fer2013::classes(),
        convert: crate::data::Convert::Auto,
        cv: None,
        test_groups: None,
        prior: vec![0.1, 0.1, 0.1, 0.3, 0.1, 0.1, 0.2],
        seed: 0,
        data_digest: "ab".repeat(32),
        params: 0,
        macs: 0,
        val_accuracy: Some(0.5),
        val_fraction: 0.1,
        split_seed: 0,
        logit_adjust: None,
    }
}

fn weights(meta: &ModelMeta) -> BTreeMap<String, Tensor> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    crate::models::build(&vs.root(), &meta.model, SIZE, 7).unwrap();
    vs.variables().into_iter().collect()
}

/// The same network's int8 file parts: both convolutions and the head.
fn int8_parts(meta: &ModelMeta) -> (QuantMeta, BTreeMap<String, Tensor>) {
    let mut tensors = weights(meta);
    let mut layers = Vec::new();
    for (name, kind) in [
        ("features.0.conv0", LayerKind::Conv),
        ("features.1.conv0", LayerKind::Conv),
        ("head", LayerKind::Linear),
    ] {
        let w = format!("{name}.weight");
        let (values, scale) = quantize_weight(&tensors[&w]);
        tensors.insert(w, values);
        tensors.insert(format!("{name}{SCALE_SUFFIX}"), scale);
        layers.push(LayerMeta {
            name: name.into(),
            kind,
            exec: Exec::Int8,
            input_scale: (kind == LayerKind::Conv).then_some(0.02),
        });
    }
    let q = QuantMeta {
        scheme: "test".into(),
        calibration_images: 1,
        calibration_seed: 0,
        layers,
        fp32_val_accuracy: None,
        int8_val_accuracy: None,
        fp32_test_accuracy: 0.5,
        int8_test_accuracy: 0.5,
    };
    (q, tensors)
}

/// Writes a model file with `meta` (any JSON) and `quant` as its metadata.
fn write(
    path: &Path,
    meta: &Value,
    quant: Option<&Value>,
    tensors: &BTreeMap<String, Tensor>,
) -> PathBuf {
    let mut md = BTreeMap::from([
        ("fer.format".to_string(), FORMAT.to_string()),
        ("fer.meta".to_string(), meta.to_string()),
    ]);
    if let Some(q) = quant {
        md.insert(META_KEY.to_string(), q.to_string());
    }
    let list: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    tensor_io::save(path, &list, &md).unwrap();
    path.to_path_buf()
}

fn with_prior(meta: &ModelMeta, mut tensors: BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    tensors.insert("prior".into(), Tensor::from_slice(&meta.prior));
    tensors
}

/// The message of loading `path`, which must fail; it names the file.
fn refused(path: &Path) -> String {
    let err = match Classifier::load(path, Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&path.display().to_string()), "{err}");
    err
}

/// Loads `path`: a model or an error naming the file, never a panic.
fn load_or_named_error(path: &Path) -> Result<Classifier, String> {
    Classifier::load(path, Device::Cpu).map_err(|e| {
        let msg = format!("{e:#}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        msg
    })
}

fn images(n: usize) -> ImageSet {
    let mut set = ImageSet::default();
    for i in 0..n {
        let px: Vec<u8> = (0..PIXELS)
            .map(|j| ((i * 31 + j * 7) % 256) as u8)
            .collect();
        set.push(&px, (i % 7) as u8, Origin::PublicTest, String::new());
    }
    set
}

#[test]
fn a_valid_file_loads_and_predicts_in_float_and_int8() {
    let dir = tempfile::tempdir().unwrap();
    let m = meta();
    let meta_json = serde_json::to_value(&m).unwrap();
    let f = write(
        &dir.path().join("ok.safetensors"),
        &meta_json,
        None,
        &with_prior(&m, weights(&m)),
    );
    let clf = Classifier::load(&f, Device::Cpu).unwrap();
    let p = clf.predict_set(&images(3), true, 2).unwrap();
    assert_eq!(p.len(), 21);
    let (q, t) = int8_parts(&m);
    let qf = write(
        &dir.path().join("int8.safetensors"),
        &meta_json,
        Some(&serde_json::to_value(&q).unwrap()),
        &with_prior(&m, t),
    );
    let clf = Classifier::load(&qf, Device::Cpu).unwrap();
    assert_eq!(clf.quant.as_ref().unwrap().int8_layers(), 3);
    assert_eq!(clf.predict_set(&images(3), false, 2).unwrap().len(), 21);
}

#[test]
fn each_metadata_field_out_of_range_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let m = meta();
    let tensors = with_prior(&m, weights(&m));
    let huge = json!(1u64 << 40);
    // (JSON pointer, value; None removes the field), what the error names.
    let cases: Vec<(&str, Option<Value>, &str)> = vec![
        (
            "/preprocess/size",
            Some(json!(0)),
            "fer.meta.preprocess.size",
        ),
        (
            "/preprocess/size",
            Some(huge.clone()),
            "fer.meta.preprocess.size",
        ),
        (
            "/preprocess/std",
            Some(json!(0.0)),
            "fer.meta.preprocess.std",
        ),
        (
            "/preprocess/mean",
            Some(json!(1e300)),
            "fer.meta.preprocess",
        ),
        ("/model/widths", Some(json!([])), "fer.meta.model.widths"),
        (
            "/model/widths",
            Some(json!([2, -4])),
            "fer.meta.model.widths",
        ),
        (
            "/model/widths",
            Some(json!([1u64 << 20])),
            "fer.meta.model.widths",
        ),
        (
            "/model/widths",
            Some(json!(vec![1; 17])),
            "fer.meta.model.widths",
        ),
        (
            "/model/widths",
            Some(json!(vec![1; 4])),
            "fer.meta.model.widths",
        ),
        // In range, but more weights than the file holds: refused before
        // anything is allocated for them.
        (
            "/model/widths",
            Some(json!([4096, 4096])),
            "fer.meta.model: a cnn",
        ),
        ("/model/convs", Some(json!(0)), "fer.meta.model.convs"),
        ("/model/convs", Some(huge.clone()), "fer.meta.model.convs"),
        (
            "/model/dropout",
            Some(json!(-0.5)),
            "fer.meta.model.dropout",
        ),
        (
            "/model/kind",
            Some(json!("transformer")),
            "reading fer.meta",
        ),
        ("/model/depth", Some(json!(3)), "reading fer.meta"),
        ("/classes", Some(json!(["a"])), "fer.meta.classes"),
        ("/classes/6", Some(json!("Angry")), "fer.meta.classes"),
        ("/classes/6", Some(json!("calm/quiet")), "fer.meta.classes"),
        ("/prior", Some(json!([0.5, 0.5])), "fer.meta.prior"),
        ("/prior/0", Some(json!(-0.1)), "fer.meta.prior"),
        ("/prior/0", Some(json!(0.9)), "fer.meta.prior"),
        ("/prior", None, "reading fer.meta"),
        ("/val_fraction", Some(json!(1.5)), "fer.meta.val_fraction"),
        ("/val_fraction", Some(json!(-0.1)), "fer.meta.val_fraction"),
        ("/val_accuracy", Some(json!(2.0)), "fer.meta.val_accuracy"),
        (
            "/data_digest",
            Some(json!("é".repeat(32))),
            "fer.meta.data_digest",
        ),
        ("/seed", Some(json!(-1)), "reading fer.meta"),
        (
            "/logit_adjust",
            Some(json!({"alpha": 1e300, "bias": vec![0.0; 7]})),
            "fer.meta.logit_adjust.alpha",
        ),
        (
            "/logit_adjust",
            Some(json!({"alpha": 1.0, "bias": vec![0.0; 3]})),
            "fer.meta.logit_adjust.bias",
        ),
        (
            "/logit_adjust",
            Some(json!({"alpha": 1.0, "bias": vec![0.0; 7]})),
            "fer.meta.logit_adjust.bias",
        ),
        (
            "/model",
            Some(json!({"kind": "vit", "patch": 3})),
            "fer.meta.model.patch",
        ),
        (
            "/model",
            Some(json!({"kind": "vit", "patch": 4, "depth": 0})),
            "fer.meta.model.depth",
        ),
        (
            "/model",
            Some(json!({"kind": "vit", "patch": 4, "dim": 12, "heads": 5})),
            "fer.meta.model.dim",
        ),
        (
            "/model",
            Some(json!({"kind": "vit", "patch": 4, "mlp_ratio": 0.001})),
            "fer.meta.model.mlp_ratio",
        ),
        (
            "/model",
            Some(
                json!({"kind": "vit", "patch": 4, "dim": 9, "heads": 3, "pos_embed": "sinusoidal"}),
            ),
            "fer.meta.model.dim",
        ),
        (
            "/model",
            Some(json!({"kind": "mlp", "hidden": [0]})),
            "fer.meta.model.hidden",
        ),
        (
            "/model",
            Some(json!({"kind": "resnet18", "dropout": 2.0})),
            "fer.meta.model.dropout",
        ),
        (
            "/model",
            Some(json!({"kind": "resnet18"})),
            "fer.meta.model: a resnet18",
        ),
        (
            "/model",
            Some(json!({"kind": "ensemble", "members": [{"kind": "logistic"}]})),
            "fer.meta.model.members",
        ),
        (
            "/model",
            Some(
                json!({"kind": "ensemble", "members": [{"kind": "logistic"}, {"kind": "majority"}]}),
            ),
            "fer.meta.model.members[1]",
        ),
    ];
    for (i, (pointer, value, want)) in cases.into_iter().enumerate() {
        let mut j = serde_json::to_value(&m).unwrap();
        match value {
            Some(v) => {
                let (parent, key) = pointer.rsplit_once('/').unwrap();
                match j.pointer_mut(parent).unwrap() {
                    Value::Object(o) => {
                        o.insert(key.to_string(), v);
                    }
                    Value::Array(a) => a[key.parse::<usize>().unwrap()] = v,
                    other => panic!("{pointer}: {other}"),
                }
            }
            None => {
                let (parent, key) = pointer.rsplit_once('/').unwrap();
                j.pointer_mut(parent)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .remove(key);
            }
        }
        let f = write(
            &dir.path().join(format!("case{i}.safetensors")),
            &j,
            None,
            &tensors,
        );
        let err = refused(&f);
        assert!(err.contains(want), "{pointer}: wanted '{want}' in: {err}");
    }
}

#[test]
fn tensors_that_do_not_fit_the_metadata_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let m = meta();
    let meta_json = serde_json::to_value(&m).unwrap();
    let good = with_prior(&m, weights(&m));
    type Edit = Box<dyn Fn(&mut BTreeMap<String, Tensor>)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|t| {
                t.remove("head.bias");
            }),
            "tensor 'head.bias' missing",
        ),
        (
            Box::new(|t| {
                t.insert(
                    "head.weight".into(),
                    Tensor::zeros([9, 4], (Kind::Float, Device::Cpu)),
                );
            }),
            "tensor 'head.weight': file has [9, 4]",
        ),
        (
            Box::new(|t| {
                t.insert(
                    "head.weight".into(),
                    Tensor::zeros([7, 4], (Kind::Int64, Device::Cpu)),
                );
            }),
            "tensor 'head.weight' is Int64",
        ),
        (
            Box::new(|t| {
                t.insert("prior".into(), Tensor::from_slice(&[0.5f32, 0.5]));
            }),
            "tensor 'prior'",
        ),
        (
            Box::new(|t| {
                let w = t["features.1.conv0.weight"].fill(f64::NAN);
                t.insert("features.1.conv0.weight".into(), w);
            }),
            "tensor 'features.1.conv0.weight' holds 72 values that are NaN",
        ),
        (
            Box::new(|t| {
                let w = t["head.bias"].fill(f64::INFINITY);
                t.insert("head.bias".into(), w);
            }),
            "tensor 'head.bias' holds 7 values",
        ),
    ];
    for (i, (edit, want)) in cases.into_iter().enumerate() {
        let mut t: BTreeMap<String, Tensor> =
            good.iter().map(|(k, v)| (k.clone(), v.copy())).collect();
        edit(&mut t);
        let f = write(
            &dir.path().join(format!("t{i}.safetensors")),
            &meta_json,
            None,
            &t,
        );
        let err = refused(&f);
        assert!(err.contains(want), "wanted '{want}' in: {err}");
    }
}

#[test]
fn int8_records_that_do_not_fit_the_tensors_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let m = meta();
    let meta_json = serde_json::to_value(&m).unwrap();
    let (q, good) = int8_parts(&m);
    let good = with_prior(&m, good);
    let qj = serde_json::to_value(&q).unwrap();
    type Edit = Box<dyn Fn(&mut Value, &mut BTreeMap<String, Tensor>)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|q, _| q["layers"][0]["input_scale"] = Value::Null),
            "fer.quant.layers[0].input_scale",
        ),
        (
            Box::new(|q, _| q["layers"][1]["input_scale"] = json!(-1.0)),
            "fer.quant.layers[1].input_scale",
        ),
        (
            Box::new(|q, _| q["layers"][2]["name"] = json!("head2")),
            "int8 weight 'head2.weight' missing",
        ),
        (
            Box::new(|q, _| q["layers"][2]["name"] = json!("features.0.conv0")),
            "named twice",
        ),
        (
            Box::new(|q, _| q["int8_test_accuracy"] = json!(7.0)),
            "fer.quant.int8_test_accuracy",
        ),
        (
            Box::new(|q, _| q["layers"][0]["kind"] = json!("linear")),
            "'features.0.conv0.weight' has shape [2, 1, 3, 3], expected 2 dimensions",
        ),
        (
            Box::new(|_, t| {
                t.remove(&format!("head{SCALE_SUFFIX}"));
            }),
            "scale of 'head.weight' missing",
        ),
        (
            Box::new(|_, t| {
                t.insert(
                    format!("head{SCALE_SUFFIX}"),
                    Tensor::ones([3], (Kind::Float, Device::Cpu)),
                );
            }),
            "'head.weight_scale' is Float [3], expected Float [7]",
        ),
        (
            Box::new(|_, t| {
                let w = t["head.weight"].to_kind(Kind::Float);
                t.insert("head.weight".into(), w);
            }),
            "'head.weight' is Float, expected int8",
        ),
        (
            // Int8 values of another shape: the layer keeps its float path
            // and the dequantized weight's shape is refused.
            Box::new(|_, t| {
                t.insert(
                    "head.weight".into(),
                    Tensor::ones([7, 3], (Kind::Int8, Device::Cpu)),
                );
            }),
            "tensor 'head.weight': file has [7, 3]",
        ),
        (
            Box::new(|q, t| {
                q["layers"][2]["name"] = json!("tail");
                let w = t.remove("head.weight").unwrap();
                t.insert("tail.weight".into(), w.shallow_clone());
                t.insert("head.weight".into(), w.to_kind(Kind::Float));
                let s = t.remove(&format!("head{SCALE_SUFFIX}")).unwrap();
                t.insert(format!("tail{SCALE_SUFFIX}"), s);
            }),
            "int8 layers [\"tail\"] are not in a cnn network",
        ),
    ];
    for (i, (edit, want)) in cases.into_iter().enumerate() {
        let mut qv = qj.clone();
        let mut t: BTreeMap<String, Tensor> =
            good.iter().map(|(k, v)| (k.clone(), v.copy())).collect();
        edit(&mut qv, &mut t);
        let f = write(
            &dir.path().join(format!("q{i}.safetensors")),
            &meta_json,
            Some(&qv),
            &t,
        );
        let err = refused(&f);
        assert!(err.contains(want), "wanted '{want}' in: {err}");
    }
}

/// A model file whose weights are finite but whose scores are not, written
/// into `dir`, and its metadata and tensors.
pub(crate) fn overflowing_model(dir: &Path) -> (PathBuf, ModelMeta, BTreeMap<String, Tensor>) {
    let m = meta();
    let mut t = with_prior(&m, weights(&m));
    // Finite weights whose logits overflow f32, so softmax gives NaN: the
    // last BatchNorm outputs 1 on every channel, the head sums 4 x 3e38.
    for (name, v) in [
        ("features.1.bn0.weight", 0.0),
        ("features.1.bn0.bias", 1.0),
        ("head.weight", 3e38),
    ] {
        let w = t[name].fill(v);
        t.insert(name.into(), w);
    }
    let f = write(
        &dir.join("overflow.safetensors"),
        &serde_json::to_value(&m).unwrap(),
        None,
        &t,
    );
    (f, m, t)
}

/// Four plain images to score.
pub(crate) fn four_images() -> ImageSet {
    images(4)
}

#[test]
fn outputs_that_are_not_finite_are_an_error_naming_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let (f, m, t) = overflowing_model(dir.path());
    let clf = Classifier::load(&f, Device::Cpu).unwrap();
    let err = clf
        .predict_set(&images(4), false, 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&f.display().to_string())
            && err.contains("not finite")
            && err.contains("4 of 4"),
        "{err}"
    );
    // The same parts without a file are named by the model's name.
    let clf = Classifier::from_tensors(m.clone(), t, None, Device::Cpu).unwrap();
    let err = clf
        .predict_set_raw(&images(1), false, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model 'tiny'"), "{err}");
}

/// Any JSON value: what a mutated field may hold.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(vec![
            0i64,
            1,
            -1,
            2,
            3,
            4,
            7,
            8,
            9,
            48,
            49,
            1 << 16,
            1 << 40
        ])
        .prop_map(Value::from),
        prop::sample::select(vec![0.0, 0.5, 1.0, -0.5, 1e-9, 1e30]).prop_map(Value::from),
        "[a-z_]{0,10}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 24, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A model config of any family with fields drawn from edge values.
fn model_value() -> impl Strategy<Value = Value> {
    let kinds = vec![
        "cnn", "mlp", "vit", "logistic", "resnet18", "ensemble", "majority", "random",
    ];
    let keys = vec![
        "widths",
        "convs",
        "hidden",
        "dropout",
        "block_dropout",
        "batch_norm",
        "patch",
        "dim",
        "depth",
        "heads",
        "mlp_ratio",
        "attn_dropout",
        "pre_norm",
        "pos_embed",
        "pool",
        "stem",
    ];
    let number = prop::sample::select(vec![
        json!(0),
        json!(1),
        json!(2),
        json!(3),
        json!(4),
        json!(8),
        json!(9),
        json!(-1),
        json!(0.5),
        json!(1.5),
        json!(1u64 << 31),
        json!(u64::MAX),
        json!(i64::MIN),
    ]);
    let field = prop_oneof![
        number.clone(),
        prop::collection::vec(number, 0..6).prop_map(Value::Array),
        prop::sample::select(vec![
            "cls",
            "mean",
            "learned",
            "sinusoidal",
            "imagenet",
            "small"
        ])
        .prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ];
    let one = (
        prop::sample::select(kinds),
        prop::collection::btree_map(prop::sample::select(keys), field, 0..5),
    )
        .prop_map(|(kind, fields)| {
            let mut o: serde_json::Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            o.insert("kind".into(), kind.into());
            Value::Object(o)
        });
    prop_oneof![
        3 => one.clone(),
        1 => prop::collection::vec(one, 0..3)
            .prop_map(|members| json!({"kind": "ensemble", "members": members})),
    ]
}

/// Every JSON pointer to a value in `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                pointers(x, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    if !at.is_empty() {
        out.push(at);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_value_in_any_metadata_field_loads_or_is_refused_by_name(
        pick in any::<prop::sample::Index>(),
        value in json_value(),
        int8 in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let m = meta();
        let (q, qt) = int8_parts(&m);
        let mj = serde_json::to_value(&m).unwrap();
        let (mut doc, tensors) = if int8 {
            let qj = serde_json::to_value(&q).unwrap();
            (json!({"meta": mj, "quant": qj}), with_prior(&m, qt))
        } else {
            (json!({"meta": mj}), with_prior(&m, weights(&m)))
        };
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        *doc.pointer_mut(pick.get(&all).as_str()).unwrap() = value;
        let f = write(&dir.path().join("m.safetensors"), &doc["meta"], doc.get("quant"), &tensors);
        if let Ok(clf) = load_or_named_error(&f) {
            let _ = clf.predict_set(&images(2), true, 2);
        }
    }

    #[test]
    fn any_model_config_loads_or_is_refused_by_name(model in model_value(), size in 1usize..=48) {
        let dir = tempfile::tempdir().unwrap();
        let m = meta();
        let mut j = serde_json::to_value(&m).unwrap();
        j["model"] = model;
        j["preprocess"]["size"] = json!(size);
        let f = write(&dir.path().join("m.safetensors"), &j, None, &with_prior(&m, weights(&m)));
        if let Ok(clf) = load_or_named_error(&f) {
            let _ = clf.predict_set(&images(2), false, 2);
        }
    }

    #[test]
    fn flipped_or_truncated_bytes_load_or_are_refused_by_name(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        in_header in any::<bool>(),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let m = meta();
        let f = write(
            &dir.path().join("m.safetensors"),
            &serde_json::to_value(&m).unwrap(),
            None,
            &with_prior(&m, weights(&m)),
        );
        let mut bytes = std::fs::read(&f).unwrap();
        let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for (i, v) in flips {
            let i = if in_header { i.index(header) } else { i.index(bytes.len()) };
            bytes[i] = v;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        std::fs::write(&f, &bytes).unwrap();
        if let Ok(clf) = load_or_named_error(&f) {
            let _ = clf.predict_set(&images(2), false, 2);
        }
    }

    #[test]
    fn random_bytes_are_refused_by_name(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.safetensors");
        std::fs::write(&f, &bytes).unwrap();
        prop_assert!(load_or_named_error(&f).is_err());
    }
}
