//! The built-in placement policies, selectable by name.
//!
//! | name | places a task on |
//! | --- | --- |
//! | `random` | a uniformly random eligible worker |
//! | `round-robin` | the next eligible worker in turn |
//! | `power-of-two` | the less loaded of 2 random eligible workers (`place_batch`, for a caller placing a batch itself: Sparrow's batch sampling; owners place each task as it is submitted) |
//! | `load-aware` | the eligible worker with the shortest queue per unit of speed |
//! | `gpu-aware` | GPU tasks on GPU workers; CPU tasks on CPU workers unless a GPU worker is idle |
//! | `locality` | the worker holding the most argument bytes, unless it is overloaded |
//! | `default` | locality, then resources (GPU-aware), then load (load-aware) |
//!
//! All are pure: randomness comes from a seeded generator owned by the
//! policy, so a run is reproducible from its seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::policy::{Scheduler, TaskNeeds, WorkerView, eligible, no_eligible_reason};

/// The names [`by_name`] accepts.
pub const NAMES: &[&str] = &[
    "random",
    "round-robin",
    "power-of-two",
    "load-aware",
    "gpu-aware",
    "locality",
    "default",
];

/// The built-in policy called `name`, seeded with `seed`.
pub fn by_name(name: &str, seed: u64) -> Option<Box<dyn Scheduler>> {
    Some(match name {
        "random" => Box::new(Random::new(seed)),
        "round-robin" => Box::new(RoundRobin::default()),
        "power-of-two" => Box::new(PowerOfTwo::new(seed)),
        "load-aware" => Box::new(LoadAware::default()),
        "gpu-aware" => Box::new(GpuAware::default()),
        "locality" => Box::new(Locality::default()),
        "default" => Box::new(DefaultPolicy::default()),
        _ => return None,
    })
}

fn eligible_indices<'w>(
    task: &'w TaskNeeds<'_>,
    workers: &'w [WorkerView],
) -> impl Iterator<Item = usize> + 'w {
    (0..workers.len()).filter(|&i| eligible(task, &workers[i]))
}

/// The index minimising `score` among `candidates`, ties broken by the
/// rotation `start` so equal workers share the work.
fn argmin(
    candidates: impl Iterator<Item = usize>,
    n: usize,
    start: usize,
    score: impl Fn(usize) -> f64,
) -> Option<usize> {
    let mut best: Option<(usize, f64, usize)> = None;
    for i in candidates {
        let s = score(i);
        let turn = (i + n - start % n.max(1)) % n.max(1);
        let better = match best {
            None => true,
            Some((_, bs, bt)) => s < bs || (s == bs && turn < bt),
        };
        if better {
            best = Some((i, s, turn));
        }
    }
    best.map(|(i, _, _)| i)
}

/// Queue per unit of capacity, the worker's speed counting as capacity.
fn weighted_load(w: &WorkerView, speed: f64) -> f64 {
    f64::from(w.queue().saturating_add(1)) / (f64::from(w.max_concurrent.max(1)) * speed.max(1e-6))
}

/// A uniformly random eligible worker.
#[derive(Debug)]
pub struct Random {
    rng: StdRng,
}

impl Random {
    /// A policy drawing from a generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl Scheduler for Random {
    fn name(&self) -> &str {
        "random"
    }

    fn place(&mut self, task: &TaskNeeds<'_>, workers: &[WorkerView]) -> Result<usize, String> {
        let n = eligible_indices(task, workers).count();
        if n == 0 {
            return Err(no_eligible_reason(task, workers));
        }
        let k = self.rng.random_range(0..n);
        eligible_indices(task, workers)
            .nth(k)
            .ok_or_else(|| no_eligible_reason(task, workers))
    }
}

/// Eligible workers in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl Scheduler for RoundRobin {
    fn name(&self) -> &str {
        "round-robin"
    }

    fn place(&mut self, task: &TaskNeeds<'_>, workers: &[WorkerView]) -> Result<usize, String> {
        let n = workers.len();
        let pick = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|&i| eligible(task, &workers[i]))
            .ok_or_else(|| no_eligible_reason(task, workers))?;
        self.next = pick + 1;
        Ok(pick)
    }
}

/// Power of two choices: probe `d` random eligible workers, take the one
/// with the lowest pressure. A batch of `m` tasks probes `d * m` workers and
/// fills the least loaded probes first (Sparrow's batch sampling).
#[derive(Debug)]
pub struct PowerOfTwo {
    rng: StdRng,
    d: usize,
}

impl PowerOfTwo {
    /// Two probes per task, drawn from a generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            d: 2,
        }
    }

    fn probe(&mut self, task: &TaskNeeds<'_>, workers: &[WorkerView], k: usize) -> Vec<usize> {
        let eligible: Vec<usize> = eligible_indices(task, workers).collect();
        if eligible.is_empty() {
            return Vec::new();
        }
        let k = k.min(eligible.len());
        rand::seq::index::sample(&mut self.rng, eligible.len(), k)
            .into_iter()
            .map(|j| eligible[j])
            .collect()
    }
}

impl Scheduler for PowerOfTwo {
    fn name(&self) -> &str {
        "power-of-two"
    }

    fn place(&mut self, task: &TaskNeeds<'_>, workers: &[WorkerView]) -> Result<usize, String> {
        let probes = self.probe(task, workers, self.d);
        probes
            .into_iter()
            .min_by(|&a, &b| workers[a].pressure().total_cmp(&workers[b].pressure()))
            .ok_or_else(|| no_eligible_reason(task, workers))
    }

    fn place_batch(
        &mut self,
        tasks: &[TaskNeeds<'_>],
        workers: &[WorkerView],
    ) -> Vec<Result<usize, String>> {
        let Some(first) = tasks.first() else {
            return Vec::new();
        };
        if tasks.iter().any(|t| !t.is_one_cpu()) {
            // Requirements beyond one CPU: probe per task.
            return tasks.iter().map(|t| self.place(t, workers)).collect();
        }
        let probes = self.probe(first, workers, self.d * tasks.len());
        if probes.is_empty() {
            return tasks
                .iter()
                .map(|t| Err(no_eligible_reason(t, workers)))
                .collect();
        }
        // Reservation-like filling: each task goes to the probe that is least
        // loaded counting the tasks of this batch already placed there.
        let mut extra = vec![0u32; probes.len()];
        tasks
            .iter()
            .map(|_| {
                let j = (0..probes.len())
                    .min_by(|&a, &b| {
                        let load = |j: usize| {
                            let w = &workers[probes[j]];
                            f64::from(w.queue().saturating_add(extra[j]))
                                / f64::from(w.max_concurrent.max(1))
                        };
                        load(a).total_cmp(&load(b))
                    })
                    .unwrap_or(0);
                extra[j] += 1;
                Ok(probes[j])
            })
            .collect()
    }
}

/// The eligible worker with the shortest queue per unit of speed. Speed is
/// the worker's measured speed, or its hand-set hardware generation.
#[derive(Debug)]
pub struct LoadAware {
    measured: bool,
    next: usize,
}

impl Default for LoadAware {
    fn default() -> Self {
        Self {
            measured: true,
            next: 0,
        }
    }
}

impl LoadAware {
    /// Weighs by the hand-set hardware generation instead of the measured
    /// speed.
    pub fn by_generation() -> Self {
        Self {
            measured: false,
            next: 0,
        }
    }

    fn speed(&self, w: &WorkerView) -> f64 {
        if self.measured {
            w.speed
        } else {
            f64::from(w.hw_generation.max(1))
        }
    }
}

impl Scheduler for LoadAware {
    fn name(&self) -> &str {
        "load-aware"
    }

    fn place(&mut self, task: &TaskNeeds<'_>, workers: &[WorkerView]) -> Result<usize, String> {
        let pick = argmin(
            eligible_indices(task, workers),
            workers.len(),
            self.next,
            |i| weighted_load(&workers[i], self.speed(&workers[i])),
        )
        .ok_or_else(|| no_eligible_reason(task, workers))?;
        self.next = pick + 1;
        Ok(pick)
    }
}

/// GPU tasks only on GPU workers (least loaded first). CPU tasks prefer
/// CPU-only workers, and use a GPU worker only while it has a free slot and
/// every CPU worker is busy, keeping GPUs free for GPU work.
#[derive(Debug, Default)]
pub struct GpuAware {
    next: usize,
}

impl Scheduler for GpuAware {
    fn name(&self) -> &str {
        "gpu-aware"
    }

    fn place(&mut self, task: &TaskNeeds<'_>, workers: &[WorkerView]) -> Result<usize, String> {
        let n = workers.len();
        let load = |i: usize| weighted_load(&workers[i], workers[i].speed);
        let fits = |i: usize| eligible(task, &workers[i]);
        let pick = if task.gpu {
            argmin(
                (0..n).filter(|&i| workers[i].gpu && fits(i)),
                n,
                self.next,
                load,
            )
        } else {
            let cpu = argmin(
                (0..n).filter(|&i| !workers[i].gpu && fits(i)),
                n,
                self.next,
                load,
            );
            let idle_gpu = argmin(
                (0..n).filter(|&i| workers[i].gpu && workers[i].free_slots() > 0 && fits(i)),
                n,
                self.next,
                load,
            );
            match (cpu, idle_gpu) {
                (Some(c), Some(g)) if workers[c].free_slots() == 0 => Some(g),
                (Some(c), _) => Some(c),
                (None, _) => argmin((0..n).filter(|&i| fits(i)), n, self.next, load),
            }
        }
        .ok_or_else(|| no_eligible_reason(task, workers))?;
        self.next = pick + 1;
        Ok(pick)
    }
}

/// Bytes of `task`'s arguments held by each worker (unknown sizes count as
/// one byte, so a pending argument still attracts its consumer).
fn held_bytes(task: &TaskNeeds<'_>, workers: &[WorkerView]) -> Vec<u64> {
    let mut held = vec![0u64; workers.len()];
    for arg in task.args {
        if let Some(i) = workers.iter().position(|w| w.addr == arg.holder) {
            held[i] = held[i].saturating_add(arg.bytes.unwrap_or(1).max(1));
        }
    }
    held
}

/// The eligible worker holding the most argument bytes, unless its pressure
/// exceeds the least loaded worker's by more than `slack` (in units of full
/// slots); then the least loaded.
#[derive(Debug)]
pub struct Locality {
    slack: f64,
    next: usize,
}

impl Default for Locality {
    fn default() -> Self {
        Self {
            slack: 2.0,
            next: 0,
        }
    }
}

impl Scheduler for Locality {
    fn name(&self) -> &str {
        "locality"
    }

    fn place(&mut self, task: &TaskNeeds<'_>, workers: &[WorkerView]) -> Result<usize, String> {
        let n = workers.len();
        let least = argmin(eligible_indices(task, workers), n, self.next, |i| {
            workers[i].pressure()
        })
        .ok_or_else(|| no_eligible_reason(task, workers))?;
        self.next = least + 1;
        let held = held_bytes(task, workers);
        let holder = eligible_indices(task, workers)
            .filter(|&i| held[i] > 0)
            .max_by_key(|&i| held[i]);
        // The first reader of a value still being computed follows it
        // whatever the load: the holder's queue is mostly the chain it
        // belongs to, which cannot run in parallel anyway, and moving would
        // cost a transfer per link. Later readers (a fan-out) spread.
        let chained = holder.is_some_and(|h| {
            task.args
                .iter()
                .any(|a| a.holder == workers[h].addr && a.bytes.is_none() && a.readers == 0)
        });
        match holder {
            Some(h) if chained => Ok(h),
            Some(h) if workers[h].pressure() <= workers[least].pressure() + self.slack => Ok(h),
            _ => Ok(least),
        }
    }
}

/// The default: locality first (a worker holding most of the argument bytes
/// keeps the task unless overloaded), then resources (GPU tasks on GPU
/// workers, CPU tasks off busy GPU workers), then load per unit of speed.
#[derive(Debug, Default)]
pub struct DefaultPolicy {
    locality: Locality,
    gpu: GpuAware,
}

impl Scheduler for DefaultPolicy {
    fn name(&self) -> &str {
        "default"
    }

    fn place(&mut self, task: &TaskNeeds<'_>, workers: &[WorkerView]) -> Result<usize, String> {
        if !task.args.is_empty() {
            let by_locality = self.locality.place(task, workers)?;
            let held = held_bytes(task, workers);
            if held[by_locality] > 0 {
                return Ok(by_locality);
            }
        }
        self.gpu.place(task, workers)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use dfut_net::wire::{ObjectId, ResourceAmount};

    use super::*;
    use crate::scheduler::ArgPlacement;

    fn w(id: u64, inflight: u32, gpu: bool) -> WorkerView {
        WorkerView::new(id, SocketAddr::from(([127, 0, 0, 1], 1000 + id as u16)), 2)
            .gpu(gpu)
            .inflight(inflight)
    }

    #[test]
    fn loads_reported_by_a_hostile_peer_never_overflow_placement() {
        let mut workers = vec![w(0, u32::MAX, false), w(1, 0, false), w(2, 7, true)];
        workers[0].load.running = u32::MAX;
        workers[0].load.queued = u32::MAX;
        workers[1].load.queued = u32::MAX;
        workers[2].max_concurrent = u32::MAX;
        workers[2].speed = f64::MAX;
        let big = |seq| ArgPlacement {
            id: ObjectId { owner: 1, seq },
            holder: workers[0].addr,
            bytes: Some(u64::MAX),
            readers: u32::MAX,
        };
        let args = [big(1), big(2)];
        for name in NAMES {
            let mut p = by_name(name, 1).unwrap();
            for _ in 0..10 {
                // Any answer will do; it must not panic.
                let _ = p.place(&cpu(&args), &workers);
            }
        }
    }

    fn cpu(task_args: &[ArgPlacement]) -> TaskNeeds<'_> {
        TaskNeeds::new("m::f").args(task_args)
    }

    fn gpu() -> TaskNeeds<'static> {
        TaskNeeds::new("m::g").gpu(true)
    }

    fn disk(amount: u32) -> Vec<ResourceAmount> {
        vec![ResourceAmount {
            name: "disk".into(),
            amount,
        }]
    }

    #[test]
    fn every_policy_places_by_resources_or_names_what_is_missing() {
        // 0: 2 CPUs; 1: 4 CPUs, 16 GiB; 2: 2 CPUs, one `disk`, 1 GiB; 3: a GPU.
        let mut ws = vec![
            w(0, 0, false).memory_mb(1024),
            w(1, 9, false).memory_mb(16 << 10),
            w(2, 9, false).memory_mb(1024).custom(disk(1)),
            w(3, 0, true).memory_mb(1024),
        ];
        ws[1].max_concurrent = 4;
        let one_disk = disk(1);
        let two_disks = disk(2);
        let cases: [(TaskNeeds<'_>, &[usize]); 4] = [
            (TaskNeeds::new("m::wide").cpus(4), &[1]),
            (TaskNeeds::new("m::big").memory_mb(4096), &[1]),
            (TaskNeeds::new("m::io").custom(&one_disk), &[2]),
            (TaskNeeds::new("m::gpus").gpus(1).cpus(2), &[3]),
        ];
        for name in NAMES {
            let mut p = by_name(name, 3).unwrap();
            for (task, allowed) in &cases {
                for _ in 0..8 {
                    let i = p.place(task, &ws).unwrap();
                    assert!(allowed.contains(&i), "{name} put {} on {i}", task.function);
                }
                let batch = p.place_batch(&[task.clone(), task.clone()], &ws);
                assert!(
                    batch
                        .iter()
                        .all(|r| r.as_ref().is_ok_and(|i| allowed.contains(i)))
                );
            }
            let too_much = [
                (
                    TaskNeeds::new("m::f").cpus(8),
                    "8 CPUs, and the most a worker has is 4",
                ),
                (
                    TaskNeeds::new("m::f").custom(&two_disks),
                    "`disk` = 2, and the most a worker has is 1",
                ),
                (
                    TaskNeeds::new("m::f").gpus(2),
                    "2 GPUs, and the most a worker has is 1",
                ),
                (
                    TaskNeeds::new("m::f").memory_mb(1 << 20),
                    "1048576 MiB of memory",
                ),
            ];
            for (task, says) in too_much {
                let err = p.place(&task, &ws).unwrap_err();
                assert!(err.contains(says), "{name}: {err}");
            }
            let tpu = [ResourceAmount {
                name: "tpu".into(),
                amount: 1,
            }];
            let err = p
                .place(&TaskNeeds::new("m::f").custom(&tpu), &ws)
                .unwrap_err();
            assert!(err.contains("`tpu` = 1, which no worker declares"), "{err}");
            // Each need met somewhere, never all on one worker.
            let err = p
                .place(&TaskNeeds::new("m::f").cpus(4).custom(&one_disk), &ws)
                .unwrap_err();
            assert!(
                err.contains("has everything `m::f` needs at once (4 CPUs, disk = 1)"),
                "{err}"
            );
        }
    }

    fn arg(holder: &WorkerView, bytes: u64) -> ArgPlacement {
        ArgPlacement {
            id: ObjectId { owner: 1, seq: 1 },
            holder: holder.addr,
            bytes: Some(bytes),
            readers: 0,
        }
    }

    fn all() -> Vec<Box<dyn Scheduler>> {
        NAMES.iter().filter_map(|n| by_name(n, 7)).collect()
    }

    #[test]
    fn every_name_builds_its_policy() {
        for name in NAMES {
            assert_eq!(
                by_name(name, 1).map(|p| p.name().to_owned()).as_deref(),
                Some(*name)
            );
        }
        assert!(by_name("fastest", 1).is_none());
    }

    #[test]
    fn no_policy_puts_a_gpu_task_on_a_cpu_worker() {
        let ws = [w(0, 0, false), w(1, 9, true), w(2, 0, false), w(3, 4, true)];
        for mut p in all() {
            for _ in 0..50 {
                let i = p.place(&gpu(), &ws).unwrap();
                assert!(ws[i].gpu, "{} chose CPU worker {i}", p.name());
            }
            let cpu_only = [w(0, 0, false), w(1, 0, false)];
            let err = p.place(&gpu(), &cpu_only).unwrap_err();
            assert!(err.contains("needs a GPU"), "{}: {err}", p.name());
            assert_eq!(
                p.place(&cpu(&[]), &[]),
                Err("no worker is registered".into())
            );
        }
    }

    #[test]
    fn random_covers_every_worker_and_is_reproducible() {
        let ws = [w(0, 0, false), w(1, 0, false), w(2, 0, false)];
        let picks = |seed| {
            let mut p = Random::new(seed);
            (0..300)
                .map(|_| p.place(&cpu(&[]), &ws).unwrap())
                .collect::<Vec<_>>()
        };
        let a = picks(3);
        assert_eq!(a, picks(3));
        for i in 0..3 {
            let share = a.iter().filter(|&&x| x == i).count();
            assert!((60..=140).contains(&share), "worker {i} got {share} of 300");
        }
    }

    #[test]
    fn round_robin_rotates_over_eligible_workers() {
        let mut p = RoundRobin::default();
        let ws = [w(0, 9, false), w(1, 0, true), w(2, 3, false)];
        let picks: Vec<_> = (0..6).map(|_| p.place(&cpu(&[]), &ws).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        let gpu_picks: Vec<_> = (0..3).map(|_| p.place(&gpu(), &ws).unwrap()).collect();
        assert_eq!(gpu_picks, vec![1, 1, 1]);
    }

    #[test]
    fn power_of_two_takes_the_less_loaded_probe() {
        let mut p = PowerOfTwo::new(1);
        // With two workers both are always probed: always the idle one.
        let ws = [w(0, 6, false), w(1, 1, false)];
        for _ in 0..20 {
            assert_eq!(p.place(&cpu(&[]), &ws), Ok(1));
        }
        // Among many, the busiest is never chosen (it loses every probe).
        let ws: Vec<_> = (0..10)
            .map(|i| w(i, if i == 4 { 50 } else { 0 }, false))
            .collect();
        for _ in 0..200 {
            assert_ne!(p.place(&cpu(&[]), &ws), Ok(4));
        }
    }

    #[test]
    fn power_of_two_batches_fill_the_least_loaded_probes() {
        let mut p = PowerOfTwo::new(2);
        let ws = [
            w(0, 8, false),
            w(1, 0, false),
            w(2, 0, false),
            w(3, 8, false),
        ];
        let tasks: Vec<_> = (0..4).map(|_| cpu(&[])).collect();
        let picks: Vec<usize> = p
            .place_batch(&tasks, &ws)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        // All four workers are probed (d * m = 8 >= 4): the idle ones get all.
        assert!(picks.iter().all(|&i| i == 1 || i == 2), "{picks:?}");
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 2);
    }

    #[test]
    fn load_aware_weighs_queue_by_speed_or_generation() {
        let mut fast = w(0, 4, false);
        fast.speed = 4.0;
        fast.hw_generation = 1;
        let mut slow = w(1, 1, false);
        slow.speed = 1.0;
        slow.hw_generation = 4;
        let ws = [fast, slow];
        // Measured: (4+1)/(2*4) = 0.625 < (1+1)/(2*1) = 1.0.
        assert_eq!(LoadAware::default().place(&cpu(&[]), &ws), Ok(0));
        // By generation: (4+1)/(2*1) = 2.5 > (1+1)/(2*4) = 0.25.
        assert_eq!(LoadAware::by_generation().place(&cpu(&[]), &ws), Ok(1));
    }

    #[test]
    fn gpu_aware_keeps_cpu_tasks_off_gpus_until_cpus_are_busy() {
        let mut p = GpuAware::default();
        let ws = [w(0, 1, false), w(1, 0, true)];
        assert_eq!(
            p.place(&cpu(&[]), &ws),
            Ok(0),
            "a CPU worker has a free slot"
        );
        let busy = [w(0, 2, false), w(1, 0, true)];
        assert_eq!(
            p.place(&cpu(&[]), &busy),
            Ok(1),
            "CPU workers full, GPU idle"
        );
        let all_busy = [w(0, 3, false), w(1, 2, true)];
        assert_eq!(
            p.place(&cpu(&[]), &all_busy),
            Ok(0),
            "GPU busy: queue on the CPU worker"
        );
        assert_eq!(p.place(&gpu(), &all_busy), Ok(1));
    }

    #[test]
    fn locality_follows_the_bytes_unless_overloaded() {
        let mut p = Locality::default();
        let ws = [w(0, 0, false), w(1, 3, false), w(2, 0, false)];
        let args = [arg(&ws[1], 10 << 20), arg(&ws[2], 1 << 10)];
        assert_eq!(p.place(&cpu(&args), &ws), Ok(1), "most bytes on worker 1");
        let overloaded = [w(0, 0, false), w(1, 9, false), w(2, 0, false)];
        let args = [arg(&overloaded[1], 10 << 20)];
        assert_ne!(p.place(&cpu(&args), &overloaded), Ok(1));
        // The next link of a chain (a value still being computed, no reader
        // yet) follows it even to a busy worker; a second reader spreads.
        let mut link = arg(&overloaded[1], 0);
        link.bytes = None;
        assert_eq!(
            p.place(&cpu(std::slice::from_ref(&link)), &overloaded),
            Ok(1)
        );
        link.readers = 1;
        assert_ne!(
            p.place(&cpu(std::slice::from_ref(&link)), &overloaded),
            Ok(1)
        );
    }

    #[test]
    fn default_combines_locality_resources_and_load() {
        let mut p = DefaultPolicy::default();
        let ws = [w(0, 1, false), w(1, 0, false), w(2, 0, true)];
        let args = [arg(&ws[0], 1 << 20)];
        assert_eq!(p.place(&cpu(&args), &ws), Ok(0), "locality");
        assert_eq!(p.place(&cpu(&[]), &ws), Ok(1), "least loaded CPU worker");
        assert_eq!(p.place(&gpu(), &ws), Ok(2), "GPU task on the GPU worker");
        let gpu_arg = [arg(&ws[0], 1 << 20)];
        let needs = TaskNeeds {
            gpu: true,
            ..cpu(&gpu_arg)
        };
        assert_eq!(p.place(&needs, &ws), Ok(2), "resources beat locality");
    }
}
