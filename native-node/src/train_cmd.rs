use std::io::IsTerminal;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tabswarm_core::data::{Batches, Split};
use tabswarm_core::train::{self, Trainer};
use tracing::info;

use crate::cli::TrainArgs;
use crate::data_cmd;

/// What `train --json` prints.
#[derive(Debug, serde::Serialize)]
struct Summary {
    model: String,
    backend: String,
    optimizer: String,
    lr: f64,
    batch: usize,
    epochs: u32,
    steps: u64,
    train_seconds: f64,
    test_loss: f32,
    test_accuracy: f32,
    test_examples: usize,
    param_hash: String,
    exported: Option<String>,
}

pub(crate) fn run(args: TrainArgs) -> anyhow::Result<()> {
    let dataset = data_cmd::load(&args.data)?;
    let split = Split::mnist(&dataset);
    let config = train::Config {
        model: args.model,
        backend: args.backend,
        optimizer: args.optimizer,
        lr: args.lr.unwrap_or(args.optimizer.default_lr()),
        batch_size: args.batch as usize,
        seed: args.seed,
    };
    let mut trainer = Trainer::new(&config)?;
    let mut batches = Batches::new(split.train.clone(), config.batch_size, config.seed);
    let per_epoch = batches.per_epoch() as u64;
    info!(
        model = %config.model, backend = %config.backend, optimizer = %config.optimizer,
        lr = config.lr, batch = config.batch_size, train = split.train.len(), test = split.test.len(),
        "training on this machine"
    );

    let bar = progress_bar(per_epoch * u64::from(args.epochs), args.no_progress);
    let started = Instant::now();
    let mut train_time = 0.0;
    let mut steps = 0u64;
    let mut last = None;
    for epoch in 1..=args.epochs {
        let epoch_start = Instant::now();
        let mut smoothed = f32::NAN;
        for _ in 0..per_epoch {
            let loss = trainer.step(&batches.next_batch())?;
            anyhow::ensure!(
                loss.is_finite(),
                "loss became {loss} at step {steps}: lower the learning rate (--lr)"
            );
            smoothed = if smoothed.is_nan() {
                loss
            } else {
                0.95 * smoothed + 0.05 * loss
            };
            steps += 1;
            bar.set_message(format!("epoch {epoch}/{} loss {smoothed:.4}", args.epochs));
            bar.inc(1);
        }
        train_time += epoch_start.elapsed().as_secs_f64();
        let eval = trainer.evaluate(&split.test)?;
        bar.suspend(|| {
            info!(
                epoch,
                train_loss = format!("{smoothed:.4}"),
                test_loss = format!("{:.4}", eval.loss),
                test_accuracy = format!("{:.2}%", eval.accuracy * 100.0),
                "epoch done"
            )
        });
        last = Some(eval);
    }
    bar.finish_and_clear();
    // epochs >= 1 is enforced by the CLI, so there is always an evaluation.
    let eval = last.context("no epoch ran")?;
    println!(
        "test accuracy {:.2}% on {} held-out digits (loss {:.4}) after {steps} steps in {:.1} s",
        eval.accuracy * 100.0,
        eval.examples,
        eval.loss,
        started.elapsed().as_secs_f64()
    );

    let exported = match &args.export {
        Some(path) => {
            let bytes = trainer.model().to_safetensors()?;
            data_cmd::write_atomically(path, &bytes)?;
            println!(
                "model written to {} (SafeTensors, PyTorch layout)",
                path.display()
            );
            Some(path.display().to_string())
        }
        None => None,
    };
    if args.json {
        let summary = Summary {
            model: config.model.to_string(),
            backend: config.backend.to_string(),
            optimizer: config.optimizer.to_string(),
            lr: config.lr,
            batch: config.batch_size,
            epochs: args.epochs,
            steps,
            train_seconds: train_time,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy,
            test_examples: eval.examples,
            param_hash: trainer.param_hash().to_hex(),
            exported,
        };
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

fn progress_bar(total: u64, hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} steps  {msg}  ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
