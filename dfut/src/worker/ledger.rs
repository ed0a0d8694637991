//! A worker's resources beyond its slots: GPUs, reserved memory and custom
//! resources. A task that needs some takes them before it may run and
//! gives them back when it ends (its [`Grant`] drops), however it ends.
//!
//! CPUs are the runner's slots (see `runner.rs`): a task needing several
//! takes them there. Here tasks wait in one queue, oldest first. A task is
//! served only if no older waiting task needs any of the same resources,
//! so a task needing much is never starved by a stream of tasks needing
//! a little of the same, and tasks needing other resources go on.
//!
//! Bounds: the queue holds tasks received and waiting for resources, which
//! each owner's admission window bounds (beyond it, tasks wait at the
//! owner). Every wait ends when running tasks give back what they hold.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use dfut_net::wire::{ResourceAmount, ResourceRequest};
use tokio::sync::oneshot;

/// What a worker declares beyond its slots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Capacity {
    pub gpus: u32,
    pub memory_mb: u64,
    pub custom: Vec<ResourceAmount>,
}

/// The resources a task takes here, in the ledger's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Take {
    gpus: u32,
    memory_mb: u64,
    /// Units per custom resource, in the order of `Capacity::custom`.
    custom: Vec<u32>,
}

/// One worker's resources: what is free and who waits.
pub(crate) struct Ledger {
    total: Capacity,
    state: Mutex<State>,
}

struct State {
    free: Take,
    waiting: VecDeque<(Take, oneshot::Sender<Grant>)>,
}

/// Resources taken by one task; given back when dropped.
#[must_use = "resources are given back when the grant drops"]
pub(crate) struct Grant {
    ledger: Option<Arc<Ledger>>,
    take: Take,
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let Some(ledger) = self.ledger.take() {
            ledger.give_back(&self.take);
        }
    }
}

impl Take {
    /// Whether both need some of one resource.
    fn overlaps(&self, other: &Take) -> bool {
        (self.gpus > 0 && other.gpus > 0)
            || (self.memory_mb > 0 && other.memory_mb > 0)
            || self
                .custom
                .iter()
                .zip(&other.custom)
                .any(|(a, b)| *a > 0 && *b > 0)
    }

    /// Marks what `other` needs as needed here too.
    fn include(&mut self, other: &Take) {
        self.gpus = self.gpus.max(other.gpus);
        self.memory_mb = self.memory_mb.max(other.memory_mb);
        for (a, b) in self.custom.iter_mut().zip(&other.custom) {
            *a = (*a).max(*b);
        }
    }

    fn fits(&self, free: &Take) -> bool {
        self.gpus <= free.gpus
            && self.memory_mb <= free.memory_mb
            && self.custom.iter().zip(&free.custom).all(|(n, f)| n <= f)
    }

    fn subtract_from(&self, free: &mut Take) {
        free.gpus -= self.gpus;
        free.memory_mb -= self.memory_mb;
        for (f, n) in free.custom.iter_mut().zip(&self.custom) {
            *f -= n;
        }
    }

    fn add_to(&self, free: &mut Take) {
        free.gpus += self.gpus;
        free.memory_mb += self.memory_mb;
        for (f, n) in free.custom.iter_mut().zip(&self.custom) {
            *f += n;
        }
    }
}

impl Ledger {
    /// A ledger of `total`, all free.
    pub fn new(total: Capacity) -> Arc<Self> {
        let free = Take {
            gpus: total.gpus,
            memory_mb: total.memory_mb,
            custom: total.custom.iter().map(|r| r.amount).collect(),
        };
        Arc::new(Self {
            total,
            state: Mutex::new(State {
                free,
                waiting: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the counts consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this worker lacks for `need` even when idle (`slots` being its
    /// CPUs), in words; `None` if it can run it.
    pub fn lacks(&self, need: &ResourceRequest, slots: u32) -> Option<String> {
        let mut missing = Vec::new();
        if need.cpus > slots {
            missing.push(format!("{} CPUs (it has {slots})", need.cpus));
        }
        if need.gpus > self.total.gpus {
            missing.push(format!("{} GPUs (it has {})", need.gpus, self.total.gpus));
        }
        if need.memory_mb > self.total.memory_mb {
            missing.push(format!(
                "{} MiB of memory (it has {} MiB)",
                need.memory_mb, self.total.memory_mb
            ));
        }
        for r in &need.custom {
            let has = crate::scheduler::amount_of(&self.total.custom, &r.name);
            if r.amount > has {
                missing.push(format!(
                    "resource `{}` = {} (it has {has})",
                    r.name, r.amount
                ));
            }
        }
        (!missing.is_empty()).then(|| format!("this worker lacks {}", missing.join(", ")))
    }

    fn take_of(&self, need: &ResourceRequest) -> Take {
        Take {
            gpus: need.gpus,
            memory_mb: need.memory_mb,
            custom: self
                .total
                .custom
                .iter()
                .map(|r| crate::scheduler::amount_of(&need.custom, &r.name))
                .collect(),
        }
    }

    /// Takes what `need` asks beyond CPUs, waiting behind older tasks until
    /// it is free. `need` must fit this worker's total
    /// ([`lacks`](Self::lacks) says `None`), or the wait would not end.
    pub async fn acquire(self: &Arc<Self>, need: &ResourceRequest) -> Grant {
        let take = self.take_of(need);
        let rx = {
            let mut st = self.lock();
            let behind = st.waiting.iter().any(|(w, _)| w.overlaps(&take));
            if !behind && take.fits(&st.free) {
                take.subtract_from(&mut st.free);
                return Grant {
                    ledger: Some(self.clone()),
                    take,
                };
            }
            let (tx, rx) = oneshot::channel();
            st.waiting.push_back((take, tx));
            rx
        };
        match rx.await {
            Ok(grant) => grant,
            // The ledger never drops a waiter's sender unanswered (see
            // `serve`), so this cannot happen; an empty grant is harmless.
            Err(_) => Grant {
                ledger: None,
                take: Take {
                    gpus: 0,
                    memory_mb: 0,
                    custom: Vec::new(),
                },
            },
        }
    }

    fn give_back(self: &Arc<Self>, take: &Take) {
        let mut st = self.lock();
        take.add_to(&mut st.free);
        self.serve(st);
    }

    /// Grants waiting tasks, oldest first: each that fits and needs none
    /// of what an older one still waiting needs. A grant whose task
    /// stopped waiting (it was dropped) comes straight back.
    fn serve(self: &Arc<Self>, mut st: MutexGuard<'_, State>) {
        st.waiting.retain(|(_, tx)| !tx.is_closed());
        // What older tasks still waiting need: a younger one needing any of
        // it waits behind them.
        let mut blocked = Take {
            gpus: 0,
            memory_mb: 0,
            custom: vec![0; self.total.custom.len()],
        };
        let mut i = 0;
        while i < st.waiting.len() {
            let ready = {
                let (take, _) = &st.waiting[i];
                take.fits(&st.free) && !take.overlaps(&blocked)
            };
            if !ready {
                blocked.include(&st.waiting[i].0);
                i += 1;
                continue;
            }
            let Some((take, tx)) = st.waiting.remove(i) else {
                return;
            };
            take.subtract_from(&mut st.free);
            let grant = Grant {
                ledger: Some(self.clone()),
                take,
            };
            if let Err(mut unwanted) = tx.send(grant) {
                // Nobody waits for it: back to free, without dropping the
                // grant under the lock (its drop would lock again).
                if let Some(_ledger) = unwanted.ledger.take() {
                    unwanted.take.add_to(&mut st.free);
                }
            }
        }
    }

    /// Units free now, for tests.
    #[cfg(test)]
    fn free_gpus(&self) -> u32 {
        self.lock().free.gpus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(gpus: u32, memory_mb: u64, disk: u32) -> ResourceRequest {
        ResourceRequest {
            cpus: 1,
            gpus,
            memory_mb,
            custom: if disk > 0 {
                vec![ResourceAmount {
                    name: "disk".into(),
                    amount: disk,
                }]
            } else {
                Vec::new()
            },
        }
    }

    fn ledger() -> Arc<Ledger> {
        Ledger::new(Capacity {
            gpus: 2,
            memory_mb: 1000,
            custom: vec![ResourceAmount {
                name: "disk".into(),
                amount: 1,
            }],
        })
    }

    #[test]
    fn what_a_worker_lacks_is_named() {
        let l = ledger();
        assert_eq!(l.lacks(&need(2, 1000, 1), 1), None);
        let says = l.lacks(&need(3, 2000, 2), 1).unwrap_or_default();
        assert!(says.contains("3 GPUs (it has 2)"), "{says}");
        assert!(
            says.contains("2000 MiB of memory (it has 1000 MiB)"),
            "{says}"
        );
        assert!(says.contains("resource `disk` = 2 (it has 1)"), "{says}");
        let cpus = ResourceRequest {
            cpus: 4,
            ..ResourceRequest::default()
        };
        assert!(
            l.lacks(&cpus, 2)
                .unwrap_or_default()
                .contains("4 CPUs (it has 2)")
        );
    }

    #[tokio::test]
    async fn resources_are_taken_in_order_and_given_back_on_drop() {
        let l = ledger();
        let a = l.acquire(&need(1, 600, 1)).await;
        assert_eq!(l.free_gpus(), 1);
        // Needs the disk: waits. A later small task waits behind it.
        let l2 = l.clone();
        let b = tokio::spawn(async move { l2.acquire(&need(1, 100, 1)).await });
        tokio::task::yield_now().await;
        let l3 = l.clone();
        let c = tokio::spawn(async move { l3.acquire(&need(1, 0, 0)).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(
            !b.is_finished() && !c.is_finished(),
            "both wait for the disk"
        );
        drop(a);
        let b = b.await.expect("granted");
        let c = c.await.expect("granted");
        assert_eq!(l.free_gpus(), 0);
        drop((b, c));
        assert_eq!(l.free_gpus(), 2);
        assert_eq!(l.lock().free.memory_mb, 1000);
    }

    #[tokio::test]
    async fn a_task_needing_other_resources_goes_ahead() {
        let l = ledger();
        let disk = l.acquire(&need(0, 0, 1)).await;
        // Waits for the disk.
        let l2 = l.clone();
        let waiting = tokio::spawn(async move { l2.acquire(&need(0, 0, 1)).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // A GPU task shares nothing with it: served at once.
        let gpu = l.acquire(&need(1, 0, 0)).await;
        assert_eq!(l.free_gpus(), 1);
        assert!(!waiting.is_finished());
        drop((disk, gpu));
        let _second = waiting.await.expect("granted");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_loses_nothing() {
        let l = ledger();
        let a = l.acquire(&need(2, 0, 0)).await;
        let l2 = l.clone();
        let gone = tokio::spawn(async move { l2.acquire(&need(1, 0, 0)).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        gone.abort();
        let _ = gone.await;
        drop(a);
        assert_eq!(l.free_gpus(), 2, "the abandoned grant came back");
        assert!(l.lock().waiting.is_empty());
    }
}
