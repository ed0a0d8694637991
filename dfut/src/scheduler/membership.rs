//! Cluster membership as a pure state machine: workers join, report load,
//! and are dropped when they miss heartbeats.
//!
//! Time is always a parameter, so every rule here is tested without sockets
//! or sleeps. The networked service in [`super::service`] feeds it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dfut_net::wire::{WorkerInfo, WorkerLoad, WorkerState};

struct Member {
    state: WorkerState,
    last_seen: Instant,
}

/// The live workers of a cluster.
pub(crate) struct Membership {
    members: BTreeMap<u64, Member>,
    timeout: Duration,
}

impl Membership {
    /// Workers silent for longer than `timeout` are dropped.
    pub fn new(timeout: Duration) -> Self {
        Self {
            members: BTreeMap::new(),
            timeout,
        }
    }

    /// A worker joins (or re-joins).
    pub fn register(&mut self, info: WorkerInfo, now: Instant) {
        let id = info.id;
        self.members.insert(
            id,
            Member {
                state: WorkerState {
                    info,
                    load: WorkerLoad::default(),
                },
                last_seen: now,
            },
        );
    }

    /// A worker reports its load. Returns false for an unknown worker.
    pub fn heartbeat(&mut self, id: u64, load: WorkerLoad, now: Instant) -> bool {
        match self.members.get_mut(&id) {
            Some(m) => {
                m.state.load = load;
                m.last_seen = now;
                true
            }
            None => false,
        }
    }

    /// A worker left. Returns whether it was a member.
    pub fn remove(&mut self, id: u64) -> bool {
        self.members.remove(&id).is_some()
    }

    /// Drops every worker silent for longer than the timeout and returns
    /// their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<u64> {
        let dead: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.last_seen) > self.timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            self.members.remove(id);
        }
        dead
    }

    /// The live workers, in id order.
    pub fn view(&self) -> Vec<WorkerState> {
        self.members.values().map(|m| m.state.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64) -> WorkerInfo {
        WorkerInfo {
            id,
            addr: format!("127.0.0.1:{}", 1000 + id),
            max_concurrent: 2,
            hw_generation: 1,
            gpu: false,
            pid: 1,
        }
    }

    #[test]
    fn silent_workers_expire_and_beating_ones_stay() {
        let t0 = Instant::now();
        let s = Duration::from_millis;
        let mut m = Membership::new(s(1000));
        m.register(info(1), t0);
        m.register(info(2), t0);
        assert!(m.heartbeat(1, WorkerLoad::default(), t0 + s(900)));
        assert_eq!(m.expire(t0 + s(1500)), vec![2]);
        assert_eq!(m.view().len(), 1);
        assert_eq!(m.expire(t0 + s(1800)), Vec::<u64>::new());
        assert_eq!(m.expire(t0 + s(2000)), vec![1]);
        assert!(!m.heartbeat(1, WorkerLoad::default(), t0 + s(2001)));
    }

    #[test]
    fn heartbeats_carry_load() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(1));
        m.register(info(1), t0);
        let load = WorkerLoad {
            running: 3,
            objects: 9,
            ..WorkerLoad::default()
        };
        m.heartbeat(1, load.clone(), t0);
        assert_eq!(m.view()[0].load, load);
        assert!(m.remove(1));
        assert!(!m.remove(1));
    }
}
