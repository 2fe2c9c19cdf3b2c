//! What the benchmarks (tests/benches) share: percentiles, the JSON lines
//! they append to `target/bench/<bench>.jsonl`, a process's RSS.

use std::io::Write;

/// The `p` quantile (0..=1) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Appends `{"bench", "metric", "value", "unit", "goal"}` to target/bench/<bench>.jsonl.
pub fn record(bench: &str, metric: &str, value: f64, unit: &str, goal: &str) {
    let dir = crate::repo_root().join("target/bench");
    std::fs::create_dir_all(&dir).expect("mkdir target/bench");
    let line = serde_json::json!({"bench": bench, "metric": metric, "value": (value * 1000.0).round() / 1000.0, "unit": unit, "goal": goal});
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{bench}.jsonl")))
        .expect("open jsonl");
    writeln!(f, "{line}").expect("write jsonl");
}

/// Resident set size of a process, KiB (VmRSS).
pub fn rss_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Iterations from `BERTH_BENCH_ITERS`, else `default`.
pub fn iters(default: usize) -> usize {
    std::env::var("BERTH_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The benchmarks named on the command line (`cargo bench --bench X -- a b`;
/// flags cargo passes are skipped): `wanted("a")` is true for those, or for
/// every benchmark when none is named.
pub struct Selection(Vec<String>);

impl Selection {
    pub fn from_args() -> Self {
        Self(
            std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .collect(),
        )
    }

    pub fn wanted(&self, bench: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|o| o == bench)
    }
}

/// The runtime a benchmark's `main` runs on: two workers, as the machine's
/// two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
