//! Plugging in a placement policy of your own: this one sends every task
//! to the eligible worker with the highest hardware generation that has a
//! free slot, and otherwise to the least loaded one.
//!
//! `cargo run --release --example custom_policy`

use dfut::scheduler::{Scheduler, TaskNeeds, WorkerView, eligible, no_eligible_reason};

/// Newest hardware first.
struct NewestFirst;

impl Scheduler for NewestFirst {
    fn name(&self) -> &str {
        "newest-first"
    }

    fn place(&mut self, task: &TaskNeeds<'_>, workers: &[WorkerView]) -> Result<usize, String> {
        let candidates = (0..workers.len()).filter(|&i| eligible(task, &workers[i]));
        let with_room = candidates
            .clone()
            .filter(|&i| workers[i].free_slots() > 0)
            .max_by_key(|&i| workers[i].hw_generation);
        with_room
            .or_else(|| {
                candidates.min_by(|&a, &b| workers[a].pressure().total_cmp(&workers[b].pressure()))
            })
            .ok_or_else(|| no_eligible_reason(task, workers))
    }
}

/// Returns the hardware generation of the worker it ran on.
#[dfut::remote]
fn generation_here() -> u32 {
    std::env::var("DFUT_HW_GENERATION")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(1)
}

fn main() -> dfut::Result<()> {
    if std::env::var_os("DFUT_ROLE").is_some() {
        let _rt = dfut::init()?; // a worker: serves and never returns
    }
    let rt = dfut::Runtime::builder()
        .add_worker(
            dfut::WorkerOptions::default()
                .hw_generation(1)
                .max_concurrent(2),
        )
        .add_worker(
            dfut::WorkerOptions::default()
                .hw_generation(3)
                .max_concurrent(2),
        )
        .policy(NewestFirst)
        .start()?;
    let _guard = rt.enter();
    println!("policy: {}", rt.client().policy_name());
    // Two at a time fit on the generation-3 worker.
    for round in 0..3 {
        let pair = [generation_here(), generation_here()];
        let got: Vec<u32> = pair.iter().map(|f| f.get()).collect::<dfut::Result<_>>()?;
        println!("round {round}: ran on generations {got:?}");
    }
    Ok(())
}
