//! Folding repeated benchmark runs into the figures the results files carry.
//!
//! A single run can be thrown off by anything else on the machine, so every measured number
//! in `bench/results/` is the median of several runs with their min and max beside it.
//! The benchmarks emit one record per run; this module is the one place that summarises
//! them, so every file follows the same rule.

use serde_json::{Map, Value, json};

/// `{median, min, max, runs}` of the finite values (null when there are none).
pub(crate) fn stats(values: &[f64]) -> Value {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    json!({"median": median, "min": v[0], "max": v[v.len() - 1], "runs": v.len()})
}

/// Folds same-shaped run records into one: every number becomes [`stats`] over the runs;
/// objects fold key by key and arrays element by element. Strings, booleans and the values
/// under `labels` (configuration such as `validators` or a matmul `shape`) describe rather
/// than measure: they are kept as they are when all runs agree, else listed per run. A label
/// key names a value, not a list of records: where the same key holds an array of objects
/// (`light_peers` is both a count and the list of light-peer runs) it is folded.
pub(crate) fn fold(runs: &[Value], labels: &[&str]) -> Value {
    fold_at(runs, labels, false)
}

fn fold_at(runs: &[Value], labels: &[&str], is_label: bool) -> Value {
    let Some(first) = runs.first() else {
        return Value::Null;
    };
    let agree = runs.iter().all(|r| r == first);
    if is_label || first.is_string() || first.is_boolean() {
        return if agree {
            first.clone()
        } else {
            Value::Array(runs.to_vec())
        };
    }
    if runs.iter().all(|r| r.is_number() || r.is_null()) {
        let values: Vec<f64> = runs
            .iter()
            .map(|r| r.as_f64().unwrap_or(f64::NAN))
            .collect();
        return stats(&values);
    }
    if let Some(obj) = first.as_object() {
        let mut out = Map::new();
        let mut keys: Vec<&String> = obj.keys().collect();
        for r in runs.iter().skip(1).filter_map(Value::as_object) {
            keys.extend(r.keys().filter(|k| !obj.contains_key(*k)));
        }
        for key in keys {
            let column: Vec<Value> = runs
                .iter()
                .map(|r| r.get(key).cloned().unwrap_or(Value::Null))
                .collect();
            let is_label = labels.contains(&key.as_str()) && !column.iter().any(holds_records);
            out.insert(key.clone(), fold_at(&column, labels, is_label));
        }
        return Value::Object(out);
    }
    if let Some(arr) = first.as_array() {
        let same_len = runs
            .iter()
            .all(|r| r.as_array().is_some_and(|a| a.len() == arr.len()));
        if same_len {
            return Value::Array(
                (0..arr.len())
                    .map(|i| {
                        let column: Vec<Value> = runs.iter().map(|r| r[i].clone()).collect();
                        fold_at(&column, labels, false)
                    })
                    .collect(),
            );
        }
    }
    if agree {
        first.clone()
    } else {
        Value::Array(runs.to_vec())
    }
}

fn holds_records(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().any(|x| x.is_object() || x.is_array()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_median_min_max_of_finite_values() {
        assert_eq!(
            stats(&[3.0, 1.0, f64::NAN, 2.0, 5.0, 4.0]),
            json!({"median": 3.0, "min": 1.0, "max": 5.0, "runs": 5})
        );
        assert_eq!(
            stats(&[4.0, 1.0]),
            json!({"median": 2.5, "min": 1.0, "max": 4.0, "runs": 2})
        );
        assert_eq!(stats(&[f64::NAN]), Value::Null);
    }

    #[test]
    fn fold_summarises_numbers_and_keeps_labels() {
        let runs = [
            json!({"backend": "flex", "shape": [64, 784, 128], "ms": 1.0, "rows": [{"n": 4, "x": 2.0}]}),
            json!({"backend": "flex", "shape": [64, 784, 128], "ms": 3.0, "rows": [{"n": 4, "x": 1.0}]}),
            json!({"backend": "flex", "shape": [64, 784, 128], "ms": 2.0, "rows": [{"n": 4, "x": 3.0}]}),
        ];
        let folded = fold(&runs, &["shape", "n"]);
        assert_eq!(
            folded,
            json!({
                "backend": "flex",
                "shape": [64, 784, 128],
                "ms": {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3},
                "rows": [{"n": 4, "x": {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}}],
            })
        );
    }

    #[test]
    fn a_label_key_holding_records_is_folded() {
        let runs = [
            json!({"light_peers": [{"light_peers": 1000, "ms": 1.0}]}),
            json!({"light_peers": [{"light_peers": 1000, "ms": 3.0}]}),
        ];
        assert_eq!(
            fold(&runs, &["light_peers"]),
            json!({"light_peers": [{"light_peers": 1000, "ms": {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 2}}]})
        );
    }

    #[test]
    fn disagreeing_labels_are_listed_per_run() {
        let runs = [json!({"reached": true}), json!({"reached": false})];
        assert_eq!(fold(&runs, &[]), json!({"reached": [true, false]}));
    }
}
