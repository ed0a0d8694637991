//! Cluster membership as a pure state machine: workers join, report load,
//! are marked suspect when a heartbeat is late, and are dropped when they
//! miss heartbeats for too long.
//!
//! Time is always a parameter, so every rule here is tested without sockets
//! or sleeps. The networked service in [`super::service`] feeds it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dfut_net::wire::{WorkerInfo, WorkerLoad, WorkerState};

struct Member {
    state: WorkerState,
    last_seen: Instant,
    /// The connection it registered on: a connection that closes removes
    /// only what it registered, not a later registration of the same worker.
    session: u64,
}

/// The live workers of a cluster.
pub(crate) struct Membership {
    members: BTreeMap<u64, Member>,
    suspect_after: Duration,
    timeout: Duration,
}

impl Membership {
    /// Workers silent for longer than `suspect_after` are suspect; for
    /// longer than `timeout`, dropped.
    pub fn new(suspect_after: Duration, timeout: Duration) -> Self {
        Self {
            members: BTreeMap::new(),
            suspect_after,
            timeout,
        }
    }

    /// A worker joins (or re-joins) on connection `session`. Refused
    /// (false) while another connection holds the id and its heartbeats
    /// are on time: no member can replace a live worker's entry.
    pub fn register(&mut self, info: WorkerInfo, now: Instant, session: u64) -> bool {
        let id = info.id;
        if let Some(m) = self.members.get(&id)
            && m.session != session
            && now.saturating_duration_since(m.last_seen) <= self.suspect_after
        {
            // Another connection holds this id and its heartbeats are on
            // time: a duplicate (or a member posing as it), not a rejoin.
            return false;
        }
        self.members.insert(
            id,
            Member {
                state: WorkerState::new(info, WorkerLoad::default()),
                last_seen: now,
                session,
            },
        );
        true
    }

    /// The worker registered on `session` reports its load. Returns false
    /// for an unknown worker, or one registered on another connection.
    pub fn heartbeat(&mut self, id: u64, session: u64, load: WorkerLoad, now: Instant) -> bool {
        match self.members.get_mut(&id) {
            Some(m) if m.session == session => {
                m.state.load = load;
                m.last_seen = now;
                true
            }
            _ => false,
        }
    }

    /// The connection of `session` closed: the worker it registered
    /// leaves, unless it registered again since. Returns whether it left.
    pub fn remove(&mut self, id: u64, session: u64) -> bool {
        if self.members.get(&id).is_some_and(|m| m.session == session) {
            self.members.remove(&id);
            true
        } else {
            false
        }
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

    /// The live workers at `now`, in id order, late ones marked suspect.
    pub fn view(&self, now: Instant) -> Vec<WorkerState> {
        self.members
            .values()
            .map(|m| {
                let mut state = m.state.clone();
                state.suspect = now.saturating_duration_since(m.last_seen) > self.suspect_after;
                state
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64) -> WorkerInfo {
        let mut info = WorkerInfo::default();
        info.id = id;
        info.addr = format!("127.0.0.1:{}", 1000 + id);
        info.max_concurrent = 2;
        info.hw_generation = 1;
        info.pid = 1;
        info.speed = 1.0;
        info.host = "h".into();
        info
    }

    #[test]
    fn silent_workers_expire_and_beating_ones_stay() {
        let t0 = Instant::now();
        let s = Duration::from_millis;
        let mut m = Membership::new(s(300), s(1000));
        m.register(info(1), t0, 1);
        m.register(info(2), t0, 2);
        assert!(m.view(t0 + s(200)).iter().all(|w| !w.suspect));
        assert!(m.view(t0 + s(400)).iter().all(|w| w.suspect));
        assert!(m.heartbeat(1, 1, WorkerLoad::default(), t0 + s(900)));
        let view = m.view(t0 + s(950));
        assert!(!view[0].suspect && view[1].suspect, "{view:?}");
        assert_eq!(m.expire(t0 + s(1500)), vec![2]);
        assert_eq!(m.view(t0 + s(1500)).len(), 1);
        assert_eq!(m.expire(t0 + s(1800)), Vec::<u64>::new());
        assert_eq!(m.expire(t0 + s(2000)), vec![1]);
        assert!(!m.heartbeat(1, 1, WorkerLoad::default(), t0 + s(2001)));
    }

    #[test]
    fn heartbeats_carry_load() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(1), Duration::from_secs(1));
        m.register(info(1), t0, 1);
        let mut load = WorkerLoad::default();
        load.running = 3;
        load.objects = 9;
        m.heartbeat(1, 1, load.clone(), t0);
        assert_eq!(m.view(t0)[0].load, load);
        assert!(m.remove(1, 1));
        assert!(!m.remove(1, 1));
    }

    #[test]
    fn a_dropped_worker_registers_again_and_old_connections_do_not_remove_it() {
        let t0 = Instant::now();
        let s = Duration::from_millis;
        let mut m = Membership::new(s(300), s(1000));
        m.register(info(1), t0, 1);
        assert_eq!(m.expire(t0 + s(1500)), vec![1], "paused past the timeout");
        assert!(
            !m.heartbeat(1, 1, WorkerLoad::default(), t0 + s(1600)),
            "unknown now"
        );
        m.register(info(1), t0 + s(1600), 2);
        assert!(!m.remove(1, 1), "the first connection closing later");
        assert_eq!(m.view(t0 + s(1700)).len(), 1);
        assert!(m.remove(1, 2));
    }

    #[test]
    fn a_live_workers_id_cannot_be_taken_by_another_connection() {
        let t0 = Instant::now();
        let s = Duration::from_millis;
        let mut m = Membership::new(s(300), s(1000));
        assert!(m.register(info(1), t0, 1));
        let mut fake = info(1);
        fake.addr = "127.0.0.1:9".into();
        assert!(
            !m.register(fake.clone(), t0 + s(100), 2),
            "refused while live"
        );
        assert!(
            !m.heartbeat(1, 2, WorkerLoad::default(), t0 + s(150)),
            "nor can it beat for it"
        );
        assert!(m.heartbeat(1, 1, WorkerLoad::default(), t0 + s(200)));
        assert_eq!(m.view(t0 + s(250))[0].info.addr, info(1).addr);
        // Silent past the suspect time: a new connection may take over (the
        // worker reconnected).
        assert!(m.register(fake, t0 + s(600), 2));
    }
}
