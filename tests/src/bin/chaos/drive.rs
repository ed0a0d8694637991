//! The fault suite's driver: joins the cluster named by `DFUT_SCHEDULER`
//! and runs a job of independent tasks (1–50 ms), chains of stored results
//! and tree reductions, checks every value against the one it must be,
//! then drops every handle and waits for the workers to hold no object.
//!
//! `drive --tasks N --retries R --seed S` prints `submitted` once the job
//! is submitted and a `result ...` line at the end; `drive --hold N` makes
//! `N` stored objects, prints `holding` and waits to be killed.

use std::time::{Duration, Instant};

use dfut::{DistFuture, Error, Options};
use dfut_tests::{chain_start, chain_step, chain_sum, chaos_task, echo, sum_many};
use rand::{Rng, SeedableRng};

/// Bound on each value's wait.
const PATIENCE: Duration = Duration::from_secs(120);

/// What a job came to.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub tasks: u64,
    pub checked: u64,
    pub wrong: u64,
    pub lost: u64,
    pub other: u64,
    pub objects_left: u64,
    pub first_error: String,
}

impl Outcome {
    fn line(&self) -> String {
        format!(
            "result tasks={} checked={} wrong={} lost={} other={} objects_left={} first_error={}",
            self.tasks,
            self.checked,
            self.wrong,
            self.lost,
            self.other,
            self.objects_left,
            self.first_error.replace(' ', "_")
        )
    }

    /// Reads a `result ...` line.
    pub fn parse(line: &str) -> Result<Self, String> {
        let mut o = Outcome::default();
        for field in line.split_whitespace().skip(1) {
            let (k, v) = field.split_once('=').ok_or(format!("bad field {field}"))?;
            let n = || v.parse::<u64>().map_err(|e| format!("{k}: {e}"));
            match k {
                "tasks" => o.tasks = n()?,
                "checked" => o.checked = n()?,
                "wrong" => o.wrong = n()?,
                "lost" => o.lost = n()?,
                "other" => o.other = n()?,
                "objects_left" => o.objects_left = n()?,
                "first_error" => o.first_error = v.replace('_', " "),
                _ => {}
            }
        }
        Ok(o)
    }

    /// The pass criteria: no wrong value, no error but `WorkerLost` (and
    /// that only where `lost_allowed`), no object left on any worker.
    pub fn check(&self, lost_allowed: bool) -> Result<(), String> {
        if self.wrong > 0 {
            return Err(format!("{} wrong values", self.wrong));
        }
        if self.other > 0 {
            return Err(format!(
                "{} other errors, first: {}",
                self.other, self.first_error
            ));
        }
        if self.lost > 0 && !lost_allowed {
            return Err(format!("{} lost, first: {}", self.lost, self.first_error));
        }
        if self.objects_left > 0 {
            return Err(format!(
                "{} objects left on workers after every handle dropped",
                self.objects_left
            ));
        }
        if self.checked == 0 {
            return Err("no value checked".into());
        }
        Ok(())
    }
}

pub fn main(args: &[String]) -> i32 {
    let mut tasks = 1000u64;
    let mut retries = 0u32;
    let mut seed = 1u64;
    let mut hold = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), v) {
            ("--tasks", Some(v)) => tasks = v,
            ("--retries", Some(v)) => retries = u32::try_from(v).unwrap_or(u32::MAX),
            ("--seed", Some(v)) => seed = v,
            ("--hold", Some(v)) => hold = Some(v),
            _ => {
                eprintln!("drive: bad arguments {args:?}");
                return 2;
            }
        }
    }
    let rt = match dfut::init() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("drive: cannot join: {e}");
            return 1;
        }
    };
    if let Some(n) = hold {
        let held: Vec<_> = (0..n).map(chain_start).collect();
        for h in &held {
            if let Err(e) = h.get_timeout(PATIENCE) {
                eprintln!("drive: {e}");
                return 1;
            }
        }
        println!("holding");
        std::thread::sleep(Duration::from_secs(600));
        return 0;
    }
    let mut outcome = Options::new().retries(retries).call(|| job(tasks, seed));
    outcome.tasks = rt.client().stats().submitted;
    outcome.objects_left = objects_after_drop(&rt);
    println!("{}", outcome.line());
    0
}

/// Submits the job, says `submitted`, then checks every value.
fn job(tasks: u64, seed: u64) -> Outcome {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut expected: Vec<(DistFuture<u64>, u64)> = Vec::new();
    // Independent tasks of 1–50 ms.
    for i in 0..tasks * 6 / 10 {
        expected.push((chaos_task(i, rng.random_range(1..=50)), i * 3 + 1));
    }
    // Chains of stored results: start, 8 steps, sum (10 tasks each).
    for c in 0..tasks * 2 / 100 {
        let mut link = chain_start(c);
        for _ in 0..8 {
            link = chain_step(link);
        }
        let want = 10_000 * (c + 8) + (0..10_000u64).sum::<u64>();
        expected.push((chain_sum(link), want));
    }
    // Tree reductions over groups of 100 leaves.
    let leaves = tasks * 2 / 10;
    let mut start = 0;
    while start < leaves {
        let end = (start + 100).min(leaves);
        let group: Vec<_> = (start..end).map(echo).collect();
        expected.push((dfut::tree_reduce(group, 4, sum_many), (start..end).sum()));
        start = end;
    }
    println!("submitted {}", expected.len());
    let mut o = Outcome::default();
    let began = Instant::now();
    for (f, want) in &expected {
        match f.get_timeout(PATIENCE) {
            Ok(v) if v == *want => o.checked += 1,
            Ok(v) => {
                o.wrong += 1;
                o.first_error = format!("{}: {v} instead of {want}", f.function());
            }
            Err(e) => {
                if matches!(e, Error::WorkerLost { .. }) {
                    o.lost += 1;
                } else {
                    o.other += 1;
                }
                if o.first_error.is_empty() {
                    o.first_error = format!("{}: {e}", f.function());
                }
            }
        }
    }
    eprintln!(
        "drive: {} values in {:.1} s",
        expected.len(),
        began.elapsed().as_secs_f64()
    );
    o
}

/// Objects still held on the workers once every handle is dropped (waits
/// up to 60 s for the frees to arrive and be reported).
fn objects_after_drop(rt: &dfut::Runtime) -> u64 {
    let count = || {
        rt.block_on(dfut::scheduler::query_status(
            rt.scheduler_addr(),
            rt.credential(),
        ))
        .map(|s| s.workers.iter().map(|w| w.load.objects).sum::<u64>())
        .unwrap_or(u64::MAX)
    };
    let start = Instant::now();
    let mut left = count();
    while left > 0 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(250));
        left = count();
    }
    left
}
