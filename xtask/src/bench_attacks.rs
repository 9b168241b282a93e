//! `cargo xtask bench --only attacks`: test accuracy on MNIST for each aggregation rule under
//! each attack (`sim/benches/attacks.rs`), folded into the `accuracy_under_attack` section of
//! `bench/results/robust.json` (the rest of the file, the rules' costs, stays), the tables in
//! `docs/robustness.md` and the accuracy curves in `docs/robustness.svg` (plotters).

use anyhow::Context;
use serde_json::{Value, json};

use crate::runs::fold;
use crate::sh::{self, Profile, Steps};
use crate::{install, machine};

/// The section of `robust.json` this benchmark owns.
pub(crate) const SECTION: &str = "accuracy_under_attack";

/// Label keys of the records: configuration, not measurements.
const LABELS: [&str; 1] = ["height"];

pub(crate) fn run(s: &mut Steps, command: &str) -> anyhow::Result<()> {
    let root = sh::root();
    let out = super::bench::results_dir().join("robust.json");
    let dataset = s.step("data", || install::ensure_data(Profile::Dev))?;
    let load_before = machine::load_average();
    let raw = super::bench::cargo_bench_with(
        s,
        "tabswarm-sim",
        "attacks",
        &[("TABSWARM_DATA", &dataset)],
    )?;
    let runs = raw["runs"]
        .as_array()
        .context("the attacks benchmark wrote no runs")?;
    let section = json!({
        "command": command,
        "machine": machine::record_since(load_before),
        "setup": raw["setup"],
        "what": "test accuracy (MNIST test set) of the model committed after a fixed budget: the same heights, trainers and local steps in every cell; trainers run the shipped training job on the shards the protocol assigns, hostile ones (the last of the ten) craft their update, and one validator running the shipped round application (secret validation draw, per-update harm line, aggregate harm budget, the genesis rule) proposes; its proposal is committed (sim::rounds, no network). ALIE and IPM see every honest delta of the height (omniscient); *_included counts updates in blocks over the run",
        "figures": "each {median, min, max, runs} over runs with training seeds 1..=runs (other initial parameters and shards)",
        "target": "a robust rule within 1 point of clean under sign and label flips and 4 points under ALIE, at 20% hostile (issue: robust aggregation and compression)",
        "results": fold(runs, &LABELS),
    });
    let mut report: Value = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    report[SECTION] = section;
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    let md = root.join("docs/robustness.md");
    std::fs::write(&md, markdown(&report[SECTION]))
        .with_context(|| format!("writing {}", md.display()))?;
    let svg = root.join("docs/robustness.svg");
    plot(&report[SECTION], &svg).with_context(|| format!("drawing {}", svg.display()))?;
    eprintln!(
        "written to {}, {} and {}",
        out.display(),
        md.display(),
        svg.display()
    );
    Ok(())
}

/// The curves the plot draws: `(rule, attack, legend)`, the same in both panels.
const CURVES: [(&str, &str, &str); 6] = [
    ("mean", "clean", "mean, clean"),
    ("mean", "scale_x100_20pct", "mean, 20% x100"),
    ("mean", "noise_sigma1_20pct", "mean, 20% noise"),
    (
        "mean",
        "sign_flip_adaptive_20pct",
        "mean, 20% adaptive sign flip",
    ),
    (
        "centered_clip_3",
        "scale_x100_20pct",
        "centered clip, 20% x100",
    ),
    ("median", "ipm_eps0.1_40pct", "median, 40% IPM"),
];

/// Test accuracy over the heights (medians over the runs) for [`CURVES`], the protocol beside
/// the rule alone, as SVG.
fn plot(section: &Value, path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let heights = section["setup"]["heights"].as_u64().unwrap_or(20) as u32;
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    for (panel, (setting, title)) in panels.iter().zip([
        ("protocol", "the protocol: validators score first"),
        ("rule_alone", "the rule alone (every update combined)"),
    ]) {
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0u32..heights, 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_desc("height")
            .y_desc("test accuracy (%)")
            .draw()?;
        for (i, (rule, attack, legend)) in CURVES.into_iter().enumerate() {
            let points: Vec<(u32, f64)> = section["results"][setting][rule][attack]["curve"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let h = p["height"].as_u64()? as u32;
                    Some((h, median(&p["test_accuracy"])? * 100.0))
                })
                .collect();
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(legend)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::MiddleRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn median(v: &Value) -> Option<f64> {
    v["median"].as_f64()
}

/// The accuracy tables, one per setting (the protocol, the rule alone): a row per attack, a
/// column per rule, each cell the median test accuracy in percent with its range and the
/// hostile updates that reached blocks.
fn markdown(section: &Value) -> String {
    let mut md = String::from(
        "# Robustness\n\n\
         Generated by `cargo xtask bench --only attacks` from `bench/results/robust.json` \
         (section `accuracy_under_attack`); do not edit by hand. How the rules and the \
         validators' scores work, and what these tables mean for the genesis default, is in \
         DESIGN.md (\"A round\", \"How much the rules and the scores each stop\").\n\n",
    );
    let setup = &section["setup"];
    let results = &section["results"];
    let runs = results["protocol"]["mean"]["clean"]["test_accuracy"]["runs"].clone();
    md.push_str(&format!(
        "MNIST ({} examples in the package), the {} model, {} trainers (the hostile ones among \
         them), {} heights of {} local steps of {} examples each; test accuracy of the committed \
         model in percent, median of {} runs (training seeds) with min-max in brackets, then \
         the hostile updates committed over the run (median). ALIE's z: {:.2} for 10%, {:.2} for 20%. \
         The package's test split has 1,000 digits: a point is 10 digits, and one run's \
         accuracy at 94% varies by about 0.75 points from sampling alone.\n\n",
        setup["examples"],
        setup["model"].as_str().unwrap_or("?"),
        setup["trainers"],
        setup["heights"],
        setup["local_steps"],
        setup["batch_size"],
        runs,
        setup["alie_z"]["10pct"].as_f64().unwrap_or(f64::NAN),
        setup["alie_z"]["20pct"].as_f64().unwrap_or(f64::NAN),
    ));
    if let Some(cpu) = section["machine"]["cpu"].as_str() {
        md.push_str(&format!("Machine: {cpu}.\n\n"));
    }
    md.push_str(
        "![Test accuracy over the heights: the mean collapses under x100 and noise with the \
         rule alone, and holds under the protocol](robustness.svg)\n\n",
    );
    for (setting, title) in [
        (
            "protocol",
            "The protocol: validators score every update and the aggregate, the rule combines what passes",
        ),
        (
            "rule_alone",
            "The rule alone: every update combined, no scores (the literature's setting)",
        ),
    ] {
        if let Some(table) = table(&results[setting]) {
            md.push_str(&format!("## {title}\n\n{table}\n"));
        }
    }
    md
}

fn table(rules: &Value) -> Option<String> {
    let rules = rules.as_object()?;
    let names: Vec<&String> = rules.keys().collect();
    let mut md = String::from("| attack |");
    for n in &names {
        md.push_str(&format!(" {n} |"));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(names.len()));
    md.push('\n');
    let mut attacks: Vec<&String> = rules[names.first()?.as_str()].as_object()?.keys().collect();
    attacks.sort_by_key(|a| *a != "clean");
    for attack in attacks {
        md.push_str(&format!("| {attack} |"));
        for n in &names {
            let c = &rules[n.as_str()][attack.as_str()];
            let acc = &c["test_accuracy"];
            match (median(acc), acc["min"].as_f64(), acc["max"].as_f64()) {
                (Some(m), Some(lo), Some(hi)) => {
                    md.push_str(&format!(
                        " {:.1} ({:.1}-{:.1})",
                        m * 100.0,
                        lo * 100.0,
                        hi * 100.0
                    ));
                    if let Some(h) = median(&c["hostile_included"]).filter(|_| attack != "clean") {
                        md.push_str(&format!(", {h:.0}"));
                    }
                    md.push_str(" |");
                }
                _ => md.push_str(" - |"),
            }
        }
        md.push('\n');
    }
    Some(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_draws_every_curve_in_both_panels() {
        let curve = |acc: f64| json!([{"height": 4, "test_accuracy": acc}, {"height": 8, "test_accuracy": acc}]);
        let mut rules = json!({});
        for (rule, attack, _) in CURVES {
            rules[rule][attack] = json!({"curve": curve(0.5)});
        }
        let section = json!({
            "setup": {"heights": 8},
            "results": fold(&[json!({"protocol": rules.clone(), "rule_alone": rules})], &LABELS),
        });
        let path = std::env::temp_dir().join(format!("robustness-{}.svg", std::process::id()));
        plot(&section, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        for (_, _, legend) in CURVES {
            assert_eq!(svg.matches(legend).count(), 2, "{legend} in {svg}");
        }
        assert!(svg.contains("the rule alone"), "{svg}");
    }

    #[test]
    fn a_table_per_setting_with_a_row_per_attack_and_a_column_per_rule() {
        let rules = json!({
            "mean": {"clean": {"test_accuracy": 0.9, "hostile_included": 0},
                     "ipm_eps0.1_40pct": {"test_accuracy": 0.5, "hostile_included": 12}},
            "median": {"clean": {"test_accuracy": 0.91, "hostile_included": 0},
                       "ipm_eps0.1_40pct": {"test_accuracy": 0.88, "hostile_included": 3}},
        });
        let run = json!({"protocol": rules, "rule_alone": rules});
        let section = json!({
            "setup": {"model": "mlp", "trainers": 10, "heights": 30, "local_steps": 20, "batch_size": 32},
            "results": fold(&[run.clone(), run], &LABELS),
        });
        let md = markdown(&section);
        assert_eq!(md.matches("| attack | mean | median |").count(), 2, "{md}");
        assert!(md.contains("## The rule alone"), "{md}");
        assert!(
            md.contains("| clean | 90.0 (90.0-90.0) | 91.0 (91.0-91.0) |"),
            "{md}"
        );
        assert!(
            md.contains("| ipm_eps0.1_40pct | 50.0 (50.0-50.0), 12 | 88.0 (88.0-88.0), 3 |"),
            "{md}"
        );
    }
}
