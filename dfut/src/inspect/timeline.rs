//! A [`TaskReport`] drawn over time: as Chrome trace events (open the file
//! in <https://ui.perfetto.dev> or `chrome://tracing`) or as an SVG
//! picture, like `ray timeline`.
//!
//! Each worker is a process in the trace. Its tasks' runs are packed onto
//! as few tracks as never overlap (`slot 0`, `slot 1`, …: as many as ran
//! at once, so a worker with two slots busy shows two); each task's wait
//! before it ran (from its owner's submission to the worker receiving it,
//! then queued there) on `queue` tracks; the objects it served to readers
//! on `fetch` tracks. Tasks still in an owner's backlog appear under that
//! owner. A task still running or waiting is drawn up to the moment of
//! the report's newest event.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Value, json};

use super::{TaskReport, TaskState, run_kind_name, task_state_name};

/// One bar: a task's run or wait, or a fetch served.
#[derive(Debug, Clone)]
struct Span {
    start: u64,
    end: u64,
    name: String,
    category: &'static str,
    failed: bool,
    args: Value,
}

/// One horizontal track of bars that never overlap.
#[derive(Debug, Default)]
struct Track {
    spans: Vec<Span>,
}

/// The bars of one process (a worker or an owner's backlog), by kind.
#[derive(Debug, Default)]
struct Group {
    runs: Vec<Track>,
    waits: Vec<Track>,
    fetches: Vec<Track>,
}

impl Group {
    fn tracks(&self) -> impl Iterator<Item = (String, &Track)> {
        let named = |kind: &'static str| move |(i, t)| (format!("{kind} {i}"), t);
        let runs = self.runs.iter().enumerate().map(named("slot"));
        let waits = self.waits.iter().enumerate().map(named("queue"));
        let fetches = self.fetches.iter().enumerate().map(named("fetch"));
        runs.chain(waits).chain(fetches)
    }
}

/// Everything laid out: groups by name, and the time span covered.
struct Layout {
    groups: BTreeMap<String, Group>,
    start: u64,
    end: u64,
}

/// Places `span` on the first track of `tracks` free at its start; past
/// `cap` tracks, on the last one, overlapping.
fn place(tracks: &mut Vec<Track>, span: Span, cap: usize) {
    let free = tracks
        .iter_mut()
        .position(|t| t.spans.last().is_none_or(|last| last.end <= span.start));
    match free {
        Some(i) => tracks[i].spans.push(span),
        None if tracks.len() >= cap => {
            if let Some(last) = tracks.last_mut() {
                last.spans.push(span);
            }
        }
        None => tracks.push(Track { spans: vec![span] }),
    }
}

/// Lays `report` out; waits and fetches take at most `cap` tracks per
/// worker (runs always as many as ran at once).
fn layout(report: &TaskReport, cap: usize) -> Layout {
    let newest = report
        .tasks
        .iter()
        .flat_map(|t| [t.submitted_us, t.received_us, t.started_us, t.ended_us])
        .chain(report.fetches.iter().map(|f| f.ended_us))
        .max()
        .unwrap_or(0);
    let mut runs = Vec::new();
    let mut waits = Vec::new();
    for t in &report.tasks {
        let group = if t.state == TaskState::Backlog {
            format!("owner {:x} backlog", t.id.owner)
        } else {
            format!("worker {}", t.worker)
        };
        let args = json!({
            "id": t.id.to_string(),
            "state": task_state_name(t.state),
            "ran": run_kind_name(t.kind),
            "error": t.error,
        });
        let failed = t.state == TaskState::Failed;
        let end_or_now = |at: u64| if at == 0 { newest } else { at };
        let arrived = if t.received_us == 0 {
            end_or_now(t.started_us)
        } else {
            t.received_us
        };
        if t.submitted_us != 0 && t.submitted_us < arrived {
            let name = format!("submitted {}", t.function);
            let span = Span {
                start: t.submitted_us,
                end: arrived,
                name,
                category: "submit",
                failed: false,
                args: args.clone(),
            };
            waits.push((group.clone(), span));
        }
        if t.received_us != 0 {
            let ran = if t.started_us == 0 {
                end_or_now(t.ended_us)
            } else {
                t.started_us
            };
            let span = Span {
                start: t.received_us,
                end: ran.max(t.received_us),
                name: format!("queued {}", t.function),
                category: "queue",
                failed,
                args: args.clone(),
            };
            waits.push((group.clone(), span));
        }
        if t.started_us != 0 {
            let span = Span {
                start: t.started_us,
                end: end_or_now(t.ended_us).max(t.started_us),
                name: t.function.clone(),
                category: "run",
                failed,
                args,
            };
            runs.push((group, span));
        }
    }
    let mut fetches: Vec<(String, Span)> = report
        .fetches
        .iter()
        .map(|f| {
            let span = Span {
                start: f.started_us,
                end: f.ended_us.max(f.started_us),
                name: format!("fetch {}", f.id),
                category: "fetch",
                failed: false,
                args: json!({"reader": f.reader, "bytes": f.bytes, "shared_memory": f.shared}),
            };
            (format!("worker {}", f.worker), span)
        })
        .collect();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for worker in &report.workers {
        groups.entry(format!("worker {worker}")).or_default();
    }
    let mut start = u64::MAX;
    let mut end = 0;
    for (list, pick) in [(&mut runs, 0u8), (&mut waits, 1), (&mut fetches, 2)] {
        list.sort_by_key(|(_, s)| s.start);
        for (group, span) in list.drain(..) {
            start = start.min(span.start);
            end = end.max(span.end);
            let g = groups.entry(group).or_default();
            let (tracks, cap) = match pick {
                0 => (&mut g.runs, usize::MAX),
                1 => (&mut g.waits, cap),
                _ => (&mut g.fetches, cap),
            };
            place(tracks, span, cap);
        }
    }
    if start > end {
        start = end;
    }
    Layout { groups, start, end }
}

/// The report as Chrome trace events (JSON): one process per worker (and
/// per owner with a backlog), one thread per track, times in microseconds
/// from the report's first event.
///
/// ```
/// use dfut::inspect::{TaskListing, TaskReport, TaskState, timeline};
/// use dfut::scheduler::ObjectId;
///
/// let mut task = TaskListing::new(ObjectId { owner: 1, seq: 2 }, "app::f".into(), TaskState::Finished);
/// task.worker = "10.0.0.2:4000".into();
/// (task.received_us, task.started_us, task.ended_us) = (1_000, 1_500, 4_000);
/// let mut report = TaskReport::default();
/// report.tasks.push(task);
/// let trace: serde_json::Value = serde_json::from_str(&timeline::chrome_trace(&report)).unwrap();
/// let run = trace["traceEvents"].as_array().unwrap().iter().find(|e| e["cat"] == "run").unwrap();
/// assert_eq!((run["ts"].as_u64(), run["dur"].as_u64()), (Some(500), Some(2_500)));
/// ```
pub fn chrome_trace(report: &TaskReport) -> String {
    let layout = layout(report, usize::MAX);
    let mut events = Vec::new();
    for (pid, (name, group)) in layout.groups.iter().enumerate() {
        events.push(json!({
            "ph": "M", "name": "process_name", "pid": pid, "tid": 0,
            "args": {"name": name},
        }));
        for (tid, (track, spans)) in group.tracks().enumerate() {
            events.push(json!({
                "ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                "args": {"name": track},
            }));
            events.push(json!({
                "ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                "args": {"sort_index": tid},
            }));
            for s in &spans.spans {
                let mut args = s.args.clone();
                args["failed"] = json!(s.failed);
                events.push(json!({
                    "ph": "X", "name": s.name, "cat": s.category, "pid": pid, "tid": tid,
                    "ts": s.start - layout.start, "dur": s.end - s.start, "args": args,
                }));
            }
        }
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"origin_unix_us": layout.start, "generator": "dfut timeline"},
    })
    .to_string()
}

/// Width of the drawing area of [`svg`], in pixels.
const SVG_WIDTH: f64 = 1200.0;
/// Width of the track names' column.
const SVG_LABELS: f64 = 260.0;
/// Height of one track.
const SVG_ROW: f64 = 18.0;
/// Tracks of waits, and of fetches, drawn per worker; more overlap on the
/// last one.
const SVG_TRACKS: usize = 3;

/// The report drawn as an SVG picture: a row per track, grouped by worker,
/// bars coloured by function (failed ones outlined in red), a time axis in
/// milliseconds, and a legend. Waits and fetches take at most three rows
/// per worker (more overlap on the third).
///
/// ```
/// use dfut::inspect::{TaskListing, TaskReport, TaskState, timeline};
/// use dfut::scheduler::ObjectId;
///
/// let mut task = TaskListing::new(ObjectId { owner: 1, seq: 2 }, "app::f<'a>".into(), TaskState::Running);
/// task.worker = "10.0.0.2:4000".into();
/// (task.received_us, task.started_us) = (1_000, 1_500);
/// let mut report = TaskReport::default();
/// report.tasks.push(task);
/// let picture = timeline::svg(&report);
/// assert!(picture.starts_with("<svg") && picture.contains("app::f&lt;&apos;a&gt;"));
/// ```
pub fn svg(report: &TaskReport) -> String {
    let layout = layout(report, SVG_TRACKS);
    let rows: usize = layout.groups.values().map(|g| g.tracks().count() + 1).sum();
    let legend: Vec<&str> = {
        let mut names: Vec<&str> = report.tasks.iter().map(|t| t.function.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    let height = 40.0 + SVG_ROW * (rows + legend.len() + 2) as f64;
    let width = SVG_LABELS + SVG_WIDTH + 20.0;
    let span = (layout.end - layout.start).max(1) as f64;
    let x = |t: u64| SVG_LABELS + SVG_WIDTH * (t - layout.start) as f64 / span;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    // The time axis: ten ticks.
    for i in 0..=10 {
        let t = layout.start + ((u128::from(layout.end - layout.start) * i / 10) as u64);
        let px = x(t);
        let ms = (t - layout.start) as f64 / 1000.0;
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="20" x2="{px:.1}" y2="{:.1}" stroke="#dddddd"/><text x="{px:.1}" y="14" text-anchor="middle">{ms:.1} ms</text>"##,
            24.0 + SVG_ROW * rows as f64
        );
    }
    let mut y = 24.0;
    for (name, group) in &layout.groups {
        let _ = writeln!(
            out,
            r#"<text x="4" y="{:.1}" font-weight="bold">{}</text>"#,
            y + 13.0,
            escape(name)
        );
        y += SVG_ROW;
        for (track, spans) in group.tracks() {
            let _ = writeln!(out, r#"<text x="16" y="{:.1}">{track}</text>"#, y + 13.0);
            for s in &spans.spans {
                let (x0, x1) = (x(s.start), x(s.end));
                let fill = match s.category {
                    "run" => colour(&s.name),
                    "fetch" => "#8888cc".to_owned(),
                    _ => "#cccccc".to_owned(),
                };
                // A thin white edge keeps neighbours apart; red for failures.
                let (stroke, width) = if s.failed {
                    ("#d00000", 2.0)
                } else {
                    ("#ffffff", 0.5)
                };
                let _ = writeln!(
                    out,
                    r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}" stroke="{stroke}" stroke-width="{width}"><title>{}</title></rect>"#,
                    y + 2.0,
                    (x1 - x0).max(0.5),
                    SVG_ROW - 4.0,
                    escape(&s.name)
                );
            }
            y += SVG_ROW;
        }
    }
    y += SVG_ROW;
    for name in legend {
        let _ = writeln!(
            out,
            r#"<rect x="4" y="{:.1}" width="12" height="12" fill="{}"/><text x="22" y="{:.1}">{}</text>"#,
            y + 2.0,
            colour(name),
            y + 12.0,
            escape(name)
        );
        y += SVG_ROW;
    }
    out.push_str("</svg>\n");
    out
}

/// A colour for `function`, the same every time.
fn colour(function: &str) -> String {
    // FNV-1a: stable across runs and builds, unlike the std hasher.
    let hash = function.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("hsl({}, 65%, 55%)", hash % 360)
}

/// `text` safe inside SVG text and attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{FetchListing, TaskListing};
    use dfut_net::wire::ObjectId;

    fn task(seq: u64, worker: &str, times: [u64; 4], state: TaskState) -> TaskListing {
        let mut t = TaskListing::new(ObjectId { owner: 1, seq }, "m::f".into(), state);
        t.worker = worker.into();
        [t.submitted_us, t.received_us, t.started_us, t.ended_us] = times;
        t
    }

    #[test]
    fn overlapping_runs_take_as_many_tracks_as_ran_at_once() {
        let mut report = TaskReport::default();
        let finished = TaskState::Finished;
        report.tasks = vec![
            task(1, "a", [1, 10, 20, 100], finished),
            task(2, "a", [1, 10, 30, 90], finished),
            task(3, "a", [1, 10, 100, 150], finished),
            task(4, "b", [1, 10, 20, 0], TaskState::Running),
            task(5, "", [5, 0, 0, 0], TaskState::Backlog),
        ];
        let mut served = FetchListing::new(ObjectId { owner: 1, seq: 1 }, "a".into(), "r".into());
        (served.started_us, served.ended_us) = (100, 120);
        report.fetches.push(served);
        let l = layout(&report, usize::MAX);
        let a = &l.groups["worker a"];
        assert_eq!(a.runs.len(), 2, "two ran at once; the third reuses a track");
        assert_eq!(a.fetches.len(), 1);
        let b = &l.groups["worker b"];
        assert_eq!(
            b.runs[0].spans[0].end, 150,
            "still running: drawn to the newest event"
        );
        assert!(l.groups.contains_key("owner 1 backlog"));
        assert_eq!((l.start, l.end), (1, 150));
        let events: Value = serde_json::from_str(&chrome_trace(&report)).unwrap();
        let runs = events["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["cat"] == "run")
            .count();
        assert_eq!(runs, 4);
        let picture = svg(&report);
        // 4 runs, 5 waits from submission (the backlog's one to now), 4
        // in queues, 1 fetch.
        assert_eq!(picture.matches("<title>").count(), 14);
        let capped = layout(&report, 1);
        let a = &capped.groups["worker a"];
        assert_eq!(
            (a.runs.len(), a.waits.len()),
            (2, 1),
            "runs are never capped"
        );
        assert_eq!(a.waits[0].spans.len(), 6, "three submitted, three queued");
    }
}
