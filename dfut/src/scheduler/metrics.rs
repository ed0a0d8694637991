//! Prometheus metrics of a cluster, in the text exposition format
//! (version 0.0.4), gathered at each scrape.
//!
//! Loads come from the workers' heartbeats (at most 200 ms old); counts
//! and run-time histograms by function are asked of each worker at the
//! scrape (a worker that does not answer within [`WORKER_PATIENCE`] shows
//! `dfut_worker_metrics_up 0` and no function counts). Counters count
//! from each worker's start, so a restarted worker starts again from 0,
//! which Prometheus's `rate()` handles as a counter reset.
//!
//! The values are gathered from other processes at each scrape, so the
//! in-process metric types of the Prometheus client libraries do not fit;
//! the format itself is a few lines of text per sample, written here with
//! its escaping rules.

use std::fmt::Write;
use std::time::Duration;

use dfut_net::wire::{FunctionMetrics, Message, RUN_BUCKETS_US, WorkerState};

use super::service::{Cluster, ask_each};

/// How long a scrape waits for a worker's counts.
const WORKER_PATIENCE: Duration = Duration::from_secs(2);

/// The metrics text for the cluster as it is now.
pub(crate) async fn scrape(cluster: &Cluster) -> String {
    let (_, workers) = cluster.view();
    let pick = |m| match m {
        Message::MetricsReply { functions, .. } => Some(functions),
        _ => None,
    };
    let asks = workers.iter().map(|w| async move {
        let one = std::slice::from_ref(w);
        let request = Message::MetricsRequest { req: 1 };
        let what = ("metrics", WORKER_PATIENCE);
        let mut answer = ask_each(&cluster.endpoint, one, request, pick, what).await;
        answer.pop()
    });
    let counts = futures_util::future::join_all(asks).await;
    render(&workers, &counts)
}

/// The text for `workers`, with `counts[i]` the function counts of
/// `workers[i]` (`None`: it did not answer).
fn render(workers: &[WorkerState], counts: &[Option<Vec<FunctionMetrics>>]) -> String {
    let mut out = Text::default();
    let suspect = workers.iter().filter(|w| w.suspect).count();
    out.family("dfut_workers", "gauge", "Live workers, by state.");
    out.sample(
        "dfut_workers",
        &[("state", "alive")],
        workers.len() - suspect,
    );
    out.sample("dfut_workers", &[("state", "suspect")], suspect);
    out.family(
        "dfut_worker_up",
        "gauge",
        "1 for a worker whose heartbeats arrive, 0 for a suspect one (late).",
    );
    for w in workers {
        let up = u8::from(!w.suspect);
        out.sample("dfut_worker_up", &worker_labels(w), up);
    }
    out.family(
        "dfut_worker_metrics_up",
        "gauge",
        "1 for a worker that answered this scrape's question about its counts.",
    );
    for (w, c) in workers.iter().zip(counts) {
        out.sample(
            "dfut_worker_metrics_up",
            &[("worker", &w.info.addr)],
            u8::from(c.is_some()),
        );
    }
    out.family("dfut_worker_slots", "gauge", "Task slots of a worker.");
    for w in workers {
        out.sample(
            "dfut_worker_slots",
            &[("worker", &w.info.addr)],
            w.info.max_concurrent,
        );
    }
    out.family("dfut_tasks", "gauge", "Tasks at a worker now, by state.");
    for w in workers {
        let addr = w.info.addr.as_str();
        out.sample(
            "dfut_tasks",
            &[("worker", addr), ("state", "running")],
            w.load.running,
        );
        out.sample(
            "dfut_tasks",
            &[("worker", addr), ("state", "queued")],
            w.load.queued,
        );
    }
    out.family(
        "dfut_tasks_total",
        "counter",
        "Tasks ended at a worker since it started, by function and outcome.",
    );
    for (w, c) in workers.iter().zip(counts) {
        for f in c.iter().flatten() {
            let base = [
                ("worker", w.info.addr.as_str()),
                ("function", f.function.as_str()),
            ];
            for (state, n) in [("finished", f.finished), ("failed", f.failed)] {
                let labels = [base[0], base[1], ("state", state)];
                out.sample("dfut_tasks_total", &labels, n);
            }
        }
    }
    out.family(
        "dfut_task_run_seconds",
        "histogram",
        "How long tasks ran at a worker, by function.",
    );
    for (w, c) in workers.iter().zip(counts) {
        for f in c.iter().flatten() {
            out.histogram(&w.info.addr, f);
        }
    }
    out.family(
        "dfut_object_store_bytes",
        "gauge",
        "Bytes of objects a worker holds, by where they are.",
    );
    for w in workers {
        let l = &w.load;
        let heap = l
            .object_bytes
            .saturating_sub(l.shared_bytes)
            .saturating_sub(l.spilled_bytes);
        let addr = w.info.addr.as_str();
        for (place, bytes) in [
            ("heap", heap),
            ("shm", l.shared_bytes),
            ("disk", l.spilled_bytes),
        ] {
            out.sample(
                "dfut_object_store_bytes",
                &[("worker", addr), ("place", place)],
                bytes,
            );
        }
    }
    out.family("dfut_objects", "gauge", "Objects a worker holds.");
    for w in workers {
        out.sample("dfut_objects", &[("worker", &w.info.addr)], w.load.objects);
    }
    out.0
}

fn worker_labels(w: &WorkerState) -> [(&'static str, &str); 2] {
    [("worker", &w.info.addr), ("host", &w.info.host)]
}

/// Metrics text being written.
#[derive(Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"");
                escape_into(&mut self.0, v);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// The run-time histogram of one function at `worker`: cumulative
    /// buckets in seconds, their sum and count.
    fn histogram(&mut self, worker: &str, f: &FunctionMetrics) {
        let name = "dfut_task_run_seconds";
        let base = [("worker", worker), ("function", f.function.as_str())];
        // One count per bucket, whatever length a peer sent.
        let counts = (0..=RUN_BUCKETS_US.len()).map(|i| f.runs.get(i).copied().unwrap_or(0));
        let mut cumulative = 0u64;
        for (i, n) in counts.enumerate() {
            cumulative = cumulative.saturating_add(n);
            let le = RUN_BUCKETS_US
                .get(i)
                .map_or("+Inf".to_owned(), |us| (*us as f64 / 1e6).to_string());
            let labels = [base[0], base[1], ("le", le.as_str())];
            self.sample(&format!("{name}_bucket"), &labels, cumulative);
        }
        self.sample(&format!("{name}_sum"), &base, f.run_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), &base, cumulative);
    }
}

/// Writes `value` escaped as a label value: backslash, double quote and
/// line feed.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use dfut_net::wire::{WorkerInfo, WorkerLoad};

    use super::*;

    #[test]
    fn samples_carry_escaped_labels_and_histograms_are_cumulative() {
        let mut info = WorkerInfo::default();
        (info.addr, info.max_concurrent) = ("127.0.0.1:4000".into(), 2);
        info.host = "h\"1".into();
        let mut load = WorkerLoad::default();
        load.running = 2;
        let workers = [WorkerState::new(info, load)];
        let mut f = FunctionMetrics::new("m::f".into());
        (f.finished, f.failed, f.run_us) = (3, 1, 2_500_000);
        f.runs[0] = 2;
        f.runs[RUN_BUCKETS_US.len()] = 1;
        let text = render(&workers, &[Some(vec![f])]);
        assert!(text.contains("dfut_worker_up{worker=\"127.0.0.1:4000\",host=\"h\\\"1\"} 1\n"));
        assert!(text.contains("dfut_tasks{worker=\"127.0.0.1:4000\",state=\"running\"} 2\n"));
        let labels = "worker=\"127.0.0.1:4000\",function=\"m::f\"";
        assert!(text.contains(&format!(
            "dfut_tasks_total{{{labels},state=\"failed\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "dfut_task_run_seconds_bucket{{{labels},le=\"0.00005\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "dfut_task_run_seconds_bucket{{{labels},le=\"10\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "dfut_task_run_seconds_bucket{{{labels},le=\"+Inf\"}} 3\n"
        )));
        assert!(text.contains(&format!("dfut_task_run_seconds_sum{{{labels}}} 2.5\n")));
        assert!(text.contains(&format!("dfut_task_run_seconds_count{{{labels}}} 3\n")));
        assert!(text.contains("# TYPE dfut_task_run_seconds histogram\n"));
    }
}
