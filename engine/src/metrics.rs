//! Process metrics on the official `prometheus-client` crate, exposed as OpenMetrics text:
//! counters and histograms per kind, kept in memory and encoded on scrape. Queue-wide gauges
//! (depth per state, oldest waiting age) are read from the database by the API's `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Histogram bucket bounds in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 120.0,
];

/// A sample's labels, in order.
pub type Labels = Vec<(String, String)>;

/// The exposition's media type: OpenMetrics text, which Prometheus negotiates and scrapes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Ends an exposition assembled from [`Metrics::render`] and gauge families (OpenMetrics wants one
/// `# EOF`, at the very end).
pub fn finish(mut out: String) -> String {
    out.push_str("# EOF\n");
    out
}

/// A family's name, type ("counter" or "histogram") and help text (`# HELP` / `# TYPE` lines).
pub type Family3 = (&'static str, &'static str, &'static str);

/// The engine's families. (They keep the `stoflow_` prefix they were first scraped under, so
/// dashboards and autoscalers keep working.)
pub const JOB_FAMILIES: &[Family3] = &[
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
];

/// The engine's process-wide metrics ([`JOB_FAMILIES`]). An application keeps its own families
/// in another [`Metrics::new`] and renders both at `/metrics`.
pub fn global() -> &'static Metrics {
    static GLOBAL: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    GLOBAL.get_or_init(|| Metrics::new(JOB_FAMILIES))
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
        &[(Vec::new(), start)],
    );
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok());
    if let Some(pages) = rss_pages {
        render_gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            &[(Vec::new(), pages * 4096.0)],
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        render_gauge(
            out,
            "process_open_fds",
            "Open file descriptors.",
            &[(Vec::new(), fds.count() as f64)],
        );
    }
}

/// A histogram family on [`BUCKETS`].
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Counters and histograms declared up front, on a `prometheus-client` registry. One per set of
/// families per process ([`global`]), so no family is declared twice in an exposition.
pub struct Metrics {
    registry: Registry,
    counters: BTreeMap<&'static str, Family<Labels, Counter>>,
    histograms: BTreeMap<&'static str, Histograms>,
}

impl Metrics {
    pub fn new(families: &[Family3]) -> Self {
        let mut m = Self {
            registry: Registry::default(),
            counters: BTreeMap::new(),
            histograms: BTreeMap::new(),
        };
        for (name, kind, help) in families {
            if *kind == "counter" {
                let family = Family::<Labels, Counter>::default();
                // The OpenMetrics encoder adds the `_total` suffix of counter samples itself.
                let base = name.strip_suffix("_total").unwrap_or(name);
                m.registry
                    .register(base, help.trim_end_matches('.'), family.clone());
                m.counters.insert(name, family);
            } else {
                let family: Histograms = Family::new_with_constructor(|| Histogram::new(BUCKETS));
                m.registry
                    .register(*name, help.trim_end_matches('.'), family.clone());
                m.histograms.insert(name, family);
            }
        }
        m
    }
}

/// The labels of a sample, for [`Metrics::inc`], [`Metrics::observe`] and [`render_gauge`].
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Metrics {
    /// Adds `by` to counter `name` (one of the declared families; an unknown name is a bug,
    /// ignored).
    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)], by: u64) {
        if let Some(f) = self.counters.get(name) {
            f.get_or_create(&labels(pairs)).inc_by(by);
        }
    }

    pub fn observe(&self, name: &'static str, pairs: &[(&str, &str)], d: Duration) {
        if let Some(f) = self.histograms.get(name) {
            f.get_or_create(&labels(pairs)).observe(d.as_secs_f64());
        }
    }

    /// Every family (OpenMetrics text, without the closing `# EOF`: see [`finish`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode_registry(&mut out, &self.registry);
        out
    }
}

/// One gauge family, for values read at scrape time.
pub fn render_gauge(out: &mut String, name: &str, help: &str, samples: &[(Labels, f64)]) {
    let mut registry = Registry::default();
    let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (labels, v) in samples {
        family.get_or_create(labels).set(*v);
    }
    // The encoder ends each help text with a period of its own.
    registry.register(name, help.trim_end_matches('.'), family);
    let _ = encode_registry(out, &registry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_add_up() {
        let m = Metrics::new(JOB_FAMILIES);
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
        // One period ends each help text (the encoder adds it).
        assert!(
            text.contains("# HELP stoflow_jobs_started Runs started by this process.\n"),
            "{text}"
        );
        assert!(
            text.contains("stoflow_jobs_started_total{kind=\"noop\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("stoflow_job_run_seconds_bucket{le=\"0.005\",kind=\"noop\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("stoflow_job_run_seconds_bucket{le=\"5.0\",kind=\"noop\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("stoflow_job_run_seconds_bucket{le=\"+Inf\",kind=\"noop\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("stoflow_job_run_seconds_count{kind=\"noop\"} 2\n"),
            "{text}"
        );
    }
}
