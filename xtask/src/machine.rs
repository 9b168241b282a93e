//! The machine a benchmark ran on, recorded the same way in every results file, so that a
//! figure can be judged against the hardware (and the load) it was measured on.

use std::process::Command;

use serde_json::{Value, json};

use crate::sh;

/// CPU flag prefixes that decide how fast float kernels can be: x86 vector extensions and
/// FMA, AMX, and the Arm equivalents (`Features` line on aarch64).
const SIMD_PREFIXES: [&str; 8] = ["sse", "ssse", "avx", "fma", "f16c", "amx", "asimd", "sve"];

/// CPU model, SIMD/FMA flags, cores, nominal clock, OS load now, rustc.
pub(crate) fn record() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let rustc =
        sh::output("rustc --version", Command::new("rustc").arg("--version")).unwrap_or_default();
    json!({
        "cpu": field(&cpuinfo, &["model name", "Model", "cpu model"]).unwrap_or_default(),
        "simd_flags": simd_flags(&cpuinfo),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        // Under a hypervisor this is the advertised clock, not the turbo clock the kernels
        // run at; the benchmarks report the clock their peak kernels imply.
        "cpu_mhz_reported": field(&cpuinfo, &["cpu MHz"]).and_then(|s| s.parse::<f64>().ok()),
        "load_average_1_5_15_min": load_average(),
        "rustc": rustc.trim(),
    })
}

/// [`record`] for a benchmark that started when the load average was `load_before`.
pub(crate) fn record_since(load_before: Option<Vec<f64>>) -> Value {
    let mut r = record();
    r["load_average_before_1_5_15_min"] = json!(load_before);
    r
}

/// The first `key: value` line of `/proc/cpuinfo` for any of `keys`.
fn field(cpuinfo: &str, keys: &[&str]) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        keys.contains(&k.trim()).then(|| v.trim().to_owned())
    })
}

fn simd_flags(cpuinfo: &str) -> Vec<String> {
    let all = field(cpuinfo, &["flags", "Features"]).unwrap_or_default();
    let mut flags: Vec<String> = all
        .split_whitespace()
        .filter(|f| SIMD_PREFIXES.iter().any(|p| f.starts_with(p)))
        .map(str::to_owned)
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

/// Other work on the machine (a build next door) slows a benchmark down; the load average
/// around a run tells a reader how far to trust its figures.
pub(crate) fn load_average() -> Option<Vec<f64>> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace()
        .take(3)
        .map(|x| x.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_vector_flags() {
        let info = "processor\t: 0\nmodel name\t: Example CPU @ 2.00GHz\ncpu MHz\t\t: 2000.000\n\
                    flags\t\t: fpu sse sse2 ssse3 sse4_2 avx avx2 fma avx512f avx512_fp16 amx_tile lm\n\n\
                    processor\t: 1\nmodel name\t: Example CPU @ 2.00GHz\n";
        assert_eq!(
            field(info, &["model name"]).as_deref(),
            Some("Example CPU @ 2.00GHz")
        );
        assert_eq!(
            simd_flags(info),
            [
                "amx_tile",
                "avx",
                "avx2",
                "avx512_fp16",
                "avx512f",
                "fma",
                "sse",
                "sse2",
                "sse4_2",
                "ssse3"
            ]
        );
        assert_eq!(field(info, &["Features"]), None);
    }
}
