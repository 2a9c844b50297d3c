//! Process metrics in the Prometheus text exposition format (version 0.0.4): counters and
//! histograms per kind, kept in memory and rendered on scrape. Queue-wide gauges (depth per
//! state, oldest waiting age) are read from the database by the API's `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 120.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

#[derive(Default)]
struct Inner {
    /// (name, labels) → value. Labels are rendered `k="v",…`.
    counters: BTreeMap<(&'static str, String), u64>,
    histograms: BTreeMap<(&'static str, String), Histogram>,
}

/// Metric descriptions, rendered as `# HELP` / `# TYPE` lines.
const HELP: &[(&str, &str, &str)] = &[
    (
        "stoflow_jobs_enqueued_total",
        "counter",
        "Jobs enqueued by this process.",
    ),
    (
        "stoflow_jobs_started_total",
        "counter",
        "Runs started by this process.",
    ),
    (
        "stoflow_jobs_finished_total",
        "counter",
        "Runs finished by this process, by outcome (done, retry, snooze, dead, released).",
    ),
    (
        "stoflow_job_run_seconds",
        "histogram",
        "Run time of a job, handler start to end.",
    ),
    (
        "stoflow_job_start_latency_seconds",
        "histogram",
        "From when a job was due to when its run started.",
    ),
    (
        "stoflow_rate_limit_waits_total",
        "counter",
        "Marketplace requests that waited for budget, by outcome (waited in-process, late, snoozed_rate, snoozed_quota, snoozed_blocked, snoozed_circuit_open, circuit_opened).",
    ),
    (
        "stoflow_rate_limit_wait_seconds",
        "histogram",
        "In-process waits for a marketplace request's rate-limit slot.",
    ),
    (
        "stoflow_marketplace_http_responses_total",
        "counter",
        "Marketplace HTTP answers by marketplace and status (\"error\": no answer).",
    ),
];

/// Process-wide metrics recorded where no `Metrics` handle reaches (the marketplace clients).
/// Both binaries render it next to their own at `/metrics`.
pub fn global() -> &'static Metrics {
    static GLOBAL: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    GLOBAL.get_or_init(Metrics::default)
}

/// Process health: start time, resident memory, open file descriptors (Linux `/proc`).
pub fn render_process(out: &mut String) {
    static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    });
    render_gauge(
        out,
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch (first scrape or first use).",
        &[(String::new(), start)],
    );
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok());
    if let Some(pages) = rss_pages {
        render_gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            &[(String::new(), pages * 4096.0)],
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        render_gauge(
            out,
            "process_open_fds",
            "Open file descriptors.",
            &[(String::new(), fds.count() as f64)],
        );
    }
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",")
}

impl Metrics {
    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)], by: u64) {
        *self
            .inner
            .lock()
            .expect("metrics")
            .counters
            .entry((name, labels(pairs)))
            .or_default() += by;
    }

    pub fn observe(&self, name: &'static str, pairs: &[(&str, &str)], d: Duration) {
        self.inner
            .lock()
            .expect("metrics")
            .histograms
            .entry((name, labels(pairs)))
            .or_default()
            .observe(d.as_secs_f64());
    }

    /// Renders every metric recorded so far (families with no sample are left out, so two
    /// registries rendered one after the other never declare a family twice).
    pub fn render(&self) -> String {
        let inner = self.inner.lock().expect("metrics");
        let mut out = String::new();
        for (name, kind, help) in HELP {
            let used = inner.counters.keys().any(|(n, _)| n == name)
                || inner.histograms.keys().any(|(n, _)| n == name);
            if !used {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((n, l), v) in inner.counters.iter().filter(|((n, _), _)| n == name) {
                let _ = writeln!(out, "{n}{{{l}}} {v}");
            }
            for ((n, l), h) in inner.histograms.iter().filter(|((n, _), _)| n == name) {
                let sep = if l.is_empty() { "" } else { "," };
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(out, "{n}_bucket{{{l}{sep}le=\"{b}\"}} {}", h.counts[i]);
                }
                let _ = writeln!(out, "{n}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{n}_sum{{{l}}} {}", h.sum);
                let _ = writeln!(out, "{n}_count{{{l}}} {}", h.count);
            }
        }
        out
    }
}

/// One gauge family, for values read at scrape time.
pub fn render_gauge(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (l, v) in samples {
        let _ = writeln!(out, "{name}{{{l}}} {v}");
    }
}

/// Label text for gauges rendered with [`render_gauge`].
pub fn label_text(pairs: &[(&str, &str)]) -> String {
    labels(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_add_up() {
        let m = Metrics::default();
        m.inc("stoflow_jobs_started_total", &[("kind", "noop")], 2);
        m.inc("stoflow_jobs_started_total", &[("kind", "noop")], 1);
        m.observe(
            "stoflow_job_run_seconds",
            &[("kind", "noop")],
            Duration::from_millis(3),
        );
        m.observe(
            "stoflow_job_run_seconds",
            &[("kind", "noop")],
            Duration::from_secs(2),
        );
        let text = m.render();
        assert!(
            text.contains("stoflow_jobs_started_total{kind=\"noop\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("stoflow_job_run_seconds_bucket{kind=\"noop\",le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("stoflow_job_run_seconds_bucket{kind=\"noop\",le=\"5\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("stoflow_job_run_seconds_bucket{kind=\"noop\",le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("stoflow_job_run_seconds_count{kind=\"noop\"} 2\n"),
            "{text}"
        );
    }
}
