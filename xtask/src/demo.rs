//! `cargo xtask demo`: the main job, as far as it exists today: real MNIST digits, a
//! model trained on this machine with live progress, an accuracy figure and an exported
//! SafeTensors file.

use std::process::Command;

use crate::install;
use crate::sh::{self, Profile, Steps};

pub(crate) fn run(epochs: u32) -> anyhow::Result<()> {
    let mut s = Steps::new();
    let data = s.step("data (data/mnist.tsd)", || {
        install::ensure_data(Profile::Release)
    })?;
    let out = sh::root().join("out").join("mnist-mlp.safetensors");
    s.step(
        "train the MLP on this machine (tabswarm-node train)",
        || {
            let node = sh::native_bin(Profile::Release, "tabswarm-node");
            sh::run(
                "tabswarm-node train",
                Command::new(node)
                    .args([
                        "train",
                        "--model",
                        "mlp",
                        "--epochs",
                        &epochs.to_string(),
                        "--data",
                    ])
                    .arg(&data)
                    .arg("--export")
                    .arg(&out),
            )
        },
    )?;
    s.summary();
    eprintln!(
        "\nThe trained model is {}; load it in Python with safetensors.torch.load_file.",
        out.display()
    );
    Ok(())
}
