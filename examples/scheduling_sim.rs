//! The placement policies at scale: a discrete-event simulation of a
//! cluster of 1,000 workers running 1,000,000 tasks, no processes. It uses
//! the very `Scheduler` implementations the runtime uses, fed the same
//! `WorkerView`s, and prints the same table as `scheduling_experiment`.
//!
//! The simulated cluster: every worker has 4 slots; half are generation 1
//! (speed 1.0) and half generation 2 (speed 1.6); 10% have a GPU (GPU tasks
//! run 4x faster there and nowhere else); 5% are stragglers whose every
//! task first waits a uniform random delay of up to 20 ms. Tasks arrive as
//! a Poisson stream at 80% of the cluster's capacity: 94% tiny (exponential
//! work, mean 0.5 ms at speed 1), 5% coarse (mean 20 ms), 1% GPU (mean
//! 20 ms); 20% take a 4 MB argument held by some worker, and running them
//! elsewhere first costs a 4 ms transfer.
//!
//! `cargo run --release --example scheduling_sim -- [--tasks N] [--workers N] [--window N]`

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use clap::Parser;
use dfut::scheduler::{ArgPlacement, ObjectId, Scheduler, TaskNeeds, WorkerView};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    /// Simulated workers.
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    /// Simulated tasks.
    #[arg(long, default_value_t = 1_000_000)]
    tasks: usize,
    /// Offered load as a fraction of capacity.
    #[arg(long, default_value_t = 0.8)]
    load: f64,
    /// Admission window in tasks per slot (0: none, every task is pushed to
    /// a worker on arrival: pure push).
    #[arg(long, default_value_t = 0)]
    window: u32,
    /// Seed of the cluster, the workload and the randomised policies.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Policies to compare, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = dfut::scheduler::POLICY_NAMES)]
    policies: Vec<String>,
}

const SLOTS: u32 = 4;
const ARG_BYTES: u64 = 4 << 20;
/// Transfer time of a 4 MB argument, in nanoseconds (1 GB/s).
const TRANSFER_NS: u64 = 4_000_000;

#[derive(Clone)]
struct Task {
    arrival: u64,
    /// Work in nanoseconds at speed 1.0.
    work: u64,
    gpu: bool,
    arg_holder: Option<usize>,
}

struct Worker {
    speed: f64,
    gpu: bool,
    straggler: bool,
    busy: u32,
    queue: VecDeque<usize>,
    done: usize,
}

fn exp(rng: &mut StdRng, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

fn cluster(args: &Args, rng: &mut StdRng) -> Vec<Worker> {
    (0..args.workers)
        .map(|i| Worker {
            speed: if i % 2 == 0 { 1.0 } else { 1.6 },
            gpu: i % 10 == 3,
            straggler: rng.random::<f64>() < 0.05,
            busy: 0,
            queue: VecDeque::new(),
            done: 0,
        })
        .collect()
}

fn workload(args: &Args, workers: &[Worker], rng: &mut StdRng) -> Vec<Task> {
    let capacity: f64 = workers.iter().map(|w| w.speed * f64::from(SLOTS)).sum();
    let mean_work_ms = 0.94 * 0.5 + 0.05 * 20.0 + 0.01 * 20.0 / 4.0;
    let rate_per_ms = args.load * capacity / mean_work_ms;
    let mut t = 0.0f64;
    (0..args.tasks)
        .map(|_| {
            t += exp(rng, 1.0 / rate_per_ms);
            let kind = rng.random::<f64>();
            let (mean, gpu) = if kind < 0.94 {
                (0.5, false)
            } else if kind < 0.99 {
                (20.0, false)
            } else {
                (20.0, true)
            };
            Task {
                arrival: (t * 1e6) as u64,
                work: (exp(rng, mean) * 1e6) as u64 + 1,
                gpu,
                arg_holder: (rng.random::<f64>() < 0.2).then(|| rng.random_range(0..workers.len())),
            }
        })
        .collect()
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 1))
}

struct Outcome {
    policy: String,
    makespan_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    per_worker: (usize, usize, usize),
    transfers: usize,
    wall_s: f64,
}

fn duration(task: &Task, w: &Worker, w_index: usize, rng: &mut StdRng) -> u64 {
    let speed = w.speed * if task.gpu { 4.0 } else { 1.0 };
    let mut ns = (task.work as f64 / speed) as u64;
    if task.arg_holder.is_some_and(|h| h != w_index) {
        ns += TRANSFER_NS;
    }
    if w.straggler {
        ns += rng.random_range(0..=20_000_000);
    }
    ns
}

/// The state of one simulation run.
struct Sim<'a> {
    tasks: &'a [Task],
    policy: &'a mut dyn Scheduler,
    workers: Vec<Worker>,
    view: Vec<WorkerView>,
    /// Completions: (time, worker, task), earliest first.
    events: BinaryHeap<Reverse<(u64, usize, usize)>>,
    finished: Vec<u64>,
    backlog: VecDeque<usize>,
    transfers: usize,
    window: u32,
    rng: StdRng,
}

impl Sim<'_> {
    /// Starts task `i` on worker `w` at `now`, or queues it there.
    fn start_or_queue(&mut self, w: usize, i: usize, now: u64) {
        if self.workers[w].busy < SLOTS {
            self.workers[w].busy += 1;
            let d = duration(&self.tasks[i], &self.workers[w], w, &mut self.rng);
            self.events.push(Reverse((now + d, w, i)));
        } else {
            self.workers[w].queue.push_back(i);
        }
    }

    /// Places task `i`; false if every eligible worker is at its window.
    fn place(&mut self, i: usize, now: u64) -> bool {
        let task = &self.tasks[i];
        let arg;
        let args: &[ArgPlacement] = match task.arg_holder {
            Some(h) => {
                arg = [ArgPlacement::new(
                    ObjectId {
                        owner: 1,
                        seq: i as u64,
                    },
                    addr(h),
                )
                .bytes(Some(ARG_BYTES))];
                &arg
            }
            None => &[],
        };
        let needs = TaskNeeds::new(if task.gpu { "gpu" } else { "cpu" })
            .gpu(task.gpu)
            .args(args);
        let Ok(w) = self.policy.place(&needs, &self.view) else {
            return false;
        };
        if self.view[w].inflight >= self.window {
            return false;
        }
        self.view[w].inflight += 1;
        if task.arg_holder.is_some_and(|h| h != w) {
            self.transfers += 1;
        }
        self.start_or_queue(w, i, now);
        true
    }

    /// Processes every completion up to `until`.
    fn complete(&mut self, until: u64) {
        while let Some(&Reverse((t, w, i))) = self.events.peek() {
            if t > until {
                break;
            }
            self.events.pop();
            self.finished[i] = t;
            self.workers[w].busy -= 1;
            self.workers[w].done += 1;
            self.view[w].inflight -= 1;
            if let Some(next) = self.workers[w].queue.pop_front() {
                self.start_or_queue(w, next, t);
            }
            while let Some(&b) = self.backlog.front() {
                if !self.place(b, t) {
                    break;
                }
                self.backlog.pop_front();
            }
        }
    }
}

fn simulate(args: &Args, policy: &mut dyn Scheduler, tasks: &[Task]) -> Outcome {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let workers = cluster(args, &mut rng);
    let view: Vec<WorkerView> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            WorkerView::new(i as u64, addr(i), SLOTS)
                .hw_generation(if w.speed > 1.0 { 2 } else { 1 })
                .speed(w.speed)
                .gpu(w.gpu)
        })
        .collect();
    let mut sim = Sim {
        tasks,
        policy,
        workers,
        view,
        events: BinaryHeap::new(),
        finished: vec![0; tasks.len()],
        backlog: VecDeque::new(),
        transfers: 0,
        window: if args.window == 0 {
            u32::MAX
        } else {
            args.window.saturating_mul(SLOTS)
        },
        rng,
    };
    for (i, task) in tasks.iter().enumerate() {
        sim.complete(task.arrival);
        if !sim.backlog.is_empty() || !sim.place(i, task.arrival) {
            sim.backlog.push_back(i);
        }
    }
    while !sim.events.is_empty() || !sim.backlog.is_empty() {
        sim.complete(u64::MAX);
        if sim.events.is_empty() && !sim.backlog.is_empty() {
            // Nothing running and nothing placeable: a policy refused a task.
            break;
        }
    }

    let first = tasks.first().map_or(0, |t| t.arrival);
    let end = sim.finished.iter().copied().max().unwrap_or(0);
    let mut latency: Vec<u64> = tasks
        .iter()
        .zip(&sim.finished)
        .map(|(t, f)| f.saturating_sub(t.arrival))
        .collect();
    latency.sort_unstable();
    let pct = |p: f64| latency[((latency.len() - 1) as f64 * p) as usize] as f64 / 1e6;
    let mut done: Vec<usize> = sim.workers.iter().map(|w| w.done).collect();
    done.sort_unstable();
    Outcome {
        policy: sim.policy.name().to_owned(),
        makespan_ms: (end - first) as f64 / 1e6,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        per_worker: (done[0], done[done.len() / 2], done[done.len() - 1]),
        transfers: sim.transfers,
        wall_s: started.elapsed().as_secs_f64(),
    }
}

/// An offline lower bound on the makespan: the last arrival plus its
/// shortest possible run, and all work spread perfectly over all capacity.
fn lower_bound_ms(args: &Args, tasks: &[Task]) -> f64 {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let workers = cluster(args, &mut rng);
    let capacity: f64 = workers.iter().map(|w| w.speed * f64::from(SLOTS)).sum();
    let best = |t: &Task| t.work as f64 / (1.6 * if t.gpu { 4.0 } else { 1.0 });
    let work: f64 = tasks.iter().map(best).sum();
    let first = tasks.first().map_or(0, |t| t.arrival) as f64;
    let last = tasks.last().map_or(0.0, |t| t.arrival as f64 + best(t));
    ((work / capacity).max(last - first)) / 1e6
}

fn main() {
    let args = Args::parse();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let workers = cluster(&args, &mut rng);
    let tasks = workload(&args, &workers, &mut rng);

    let bound = lower_bound_ms(&args, &tasks);
    println!(
        "simulated: {} workers x {SLOTS} slots ({} GPU, {} stragglers), {} tasks at {:.0}% load, window {}",
        args.workers,
        workers.iter().filter(|w| w.gpu).count(),
        workers.iter().filter(|w| w.straggler).count(),
        args.tasks,
        args.load * 100.0,
        if args.window == 0 {
            "none".to_owned()
        } else {
            format!("{}/slot", args.window)
        }
    );
    println!(
        "\n{:<13} {:>10} {:>11} {:>9} {:>9} {:>8} {:>10}  tasks per worker (min / median / max)",
        "policy", "makespan", "tasks/s", "p50", "p99", "vs bound", "transfers"
    );
    for name in &args.policies {
        let Some(mut policy) = dfut::scheduler::policy_with_seed(name, args.seed) else {
            eprintln!(
                "unknown policy `{name}`; valid: {:?}",
                dfut::scheduler::POLICY_NAMES
            );
            std::process::exit(2);
        };
        let o = simulate(&args, policy.as_mut(), &tasks);
        println!(
            "{:<13} {:>8.1}ms {:>11.0} {:>7.2}ms {:>7.2}ms {:>7.2}x {:>10}  {} / {} / {}   ({:.1} s)",
            o.policy,
            o.makespan_ms,
            args.tasks as f64 / (o.makespan_ms / 1e3),
            o.p50_ms,
            o.p99_ms,
            o.makespan_ms / bound,
            o.transfers,
            o.per_worker.0,
            o.per_worker.1,
            o.per_worker.2,
            o.wall_s
        );
    }
    println!(
        "\nlower bound: max(last arrival + its shortest run, total work / capacity) = {bound:.1} ms"
    );
}
