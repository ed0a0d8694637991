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

    /// Why a registration is refused before anything is kept of it: names
    /// and lists a hostile member could make as large as a message are
    /// bounded (each owner keeps and copies every worker's description).
    pub fn check(info: &WorkerInfo) -> Result<(), String> {
        const MAX_TEXT: usize = 256;
        const MAX_RESOURCES: usize = 64;
        const MAX_NAME: usize = 64;
        if info.addr.len() > MAX_TEXT || info.host.len() > MAX_TEXT {
            return Err(format!("an address or host id over {MAX_TEXT} bytes"));
        }
        if info.resources.len() > MAX_RESOURCES {
            return Err(format!(
                "{} custom resources, more than {MAX_RESOURCES}",
                info.resources.len()
            ));
        }
        for (i, r) in info.resources.iter().enumerate() {
            if r.name.is_empty() || r.name.len() > MAX_NAME {
                return Err(format!("a resource name of {} bytes", r.name.len()));
            }
            if info.resources[..i].iter().any(|o| o.name == r.name) {
                return Err(format!("resource `{}` declared twice", r.name));
            }
        }
        Ok(())
    }

    /// A worker joins (or re-joins) on connection `session`. Refused
    /// (false) while another connection holds the id, or the address, and
    /// its heartbeats are on time: no member can replace a live worker's
    /// entry, or pose as a second worker where one already answers.
    pub fn register(&mut self, info: WorkerInfo, now: Instant, session: u64) -> bool {
        let id = info.id;
        let live_elsewhere = |m: &Member| {
            m.session != session && now.saturating_duration_since(m.last_seen) <= self.suspect_after
        };
        if self.members.get(&id).is_some_and(live_elsewhere) {
            // Another connection holds this id and its heartbeats are on
            // time: a duplicate (or a member posing as it), not a rejoin.
            return false;
        }
        if self
            .members
            .values()
            .any(|m| m.state.info.addr == info.addr && m.state.info.id != id && live_elsewhere(m))
        {
            // A live worker answers at that address already.
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
    use crate::TestRng as Rng;

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
    fn no_second_worker_registers_at_a_live_workers_address() {
        let t0 = Instant::now();
        let s = Duration::from_millis;
        let mut m = Membership::new(s(300), s(1000));
        assert!(m.register(info(1), t0, 1));
        let mut posing = info(2);
        posing.addr = info(1).addr;
        assert!(
            !m.register(posing.clone(), t0 + s(100), 2),
            "worker 1 is live there"
        );
        assert!(
            m.register(info(2), t0 + s(100), 2),
            "its own address is fine"
        );
        // Once worker 1 is silent past the suspect mark (a restart on the
        // same port, say), the address may be taken again.
        let mut restarted = info(3);
        restarted.addr = info(1).addr;
        assert!(m.register(restarted, t0 + s(400), 3));
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

    /// What the model knows of one member: the connection it registered
    /// on, when it was last heard from, and the last load it reported.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Held {
        session: u64,
        last_seen: Instant,
        running: u32,
    }

    /// The worker `id` as connection `session` registers it: the address
    /// tells which connection's registration an entry holds.
    fn info_from(id: u64, session: u64) -> WorkerInfo {
        let mut info = info(id);
        info.addr = format!("10.0.0.{session}:{}", 1000 + id);
        info
    }

    /// Random sequences of registrations, heartbeats, closed connections
    /// and expiries from several fake connections, some of them trying to
    /// take the id of a worker another connection holds, checked after
    /// every operation against a model of who holds what: every answer is
    /// the model's, the view lists each id once (in id order) with the
    /// holder, load and suspicion the model gives, a live worker's entry
    /// is never replaced by another connection, and an expired worker is
    /// gone (its connection can no longer beat for it).
    #[test]
    fn random_operation_sequences_keep_the_membership_table_exact() {
        let ms = Duration::from_millis;
        // How often the interesting cases came up, over all seeds.
        let (mut refused, mut taken_over, mut expired_ids, mut foreign_beats) = (0, 0, 0, 0);
        for seed in 1..=8u64 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
            let suspect_after = ms(100 + rng.below(300));
            let timeout = suspect_after + ms(rng.below(700));
            let mut m = Membership::new(suspect_after, timeout);
            let mut model: BTreeMap<u64, Held> = BTreeMap::new();
            let mut now = Instant::now();
            let mut beats = 0u32;
            for step in 0..3_000 {
                now += ms(rng.below(60));
                let id = 1 + rng.below(5);
                let session = 1 + rng.below(8);
                let live = |h: &Held, now: Instant| {
                    now.saturating_duration_since(h.last_seen) <= suspect_after
                };
                // Who holds each live id before the operation.
                let live_before: Vec<(u64, u64)> = model
                    .iter()
                    .filter(|(_, h)| live(h, now))
                    .map(|(id, h)| (*id, h.session))
                    .collect();
                let mut removed = Vec::new();
                let op = rng.below(10);
                let expired_now = op >= 8;
                match op {
                    0..=2 => {
                        let taken = model
                            .get(&id)
                            .is_some_and(|h| h.session != session && live(h, now));
                        let ok = m.register(info_from(id, session), now, session);
                        assert_eq!(
                            ok, !taken,
                            "seed {seed} step {step}: register {id} on {session}"
                        );
                        refused += u32::from(taken);
                        taken_over +=
                            u32::from(model.get(&id).is_some_and(|h| h.session != session && ok));
                        if ok {
                            model.insert(
                                id,
                                Held {
                                    session,
                                    last_seen: now,
                                    running: 0,
                                },
                            );
                        }
                    }
                    3..=6 => {
                        // Mostly the holder beats; sometimes another
                        // connection tries to beat for it.
                        let session = match model.get(&id) {
                            Some(h) if rng.below(4) > 0 => h.session,
                            _ => session,
                        };
                        beats += 1;
                        let mut load = WorkerLoad::default();
                        load.running = beats;
                        let ok = m.heartbeat(id, session, load, now);
                        let want = model.get(&id).is_some_and(|h| h.session == session);
                        assert_eq!(
                            ok, want,
                            "seed {seed} step {step}: heartbeat {id} on {session}"
                        );
                        foreign_beats += u32::from(model.contains_key(&id) && !want);
                        if let Some(h) = model.get_mut(&id).filter(|_| want) {
                            h.last_seen = now;
                            h.running = beats;
                        }
                    }
                    7 => {
                        let session = match model.get(&id) {
                            Some(h) if rng.below(2) == 0 => h.session,
                            _ => session,
                        };
                        let want = model.get(&id).is_some_and(|h| h.session == session);
                        assert_eq!(
                            m.remove(id, session),
                            want,
                            "seed {seed} step {step}: remove {id} on {session}"
                        );
                        if want {
                            model.remove(&id);
                            removed.push(id);
                        }
                    }
                    _ => {
                        let dead: Vec<u64> = model
                            .iter()
                            .filter(|(_, h)| now.saturating_duration_since(h.last_seen) > timeout)
                            .map(|(id, _)| *id)
                            .collect();
                        let expired = m.expire(now);
                        assert_eq!(expired, dead, "seed {seed} step {step}: expired");
                        for id in &dead {
                            let h = model.remove(id).expect("in the model");
                            assert!(
                                !m.heartbeat(*id, h.session, WorkerLoad::default(), now),
                                "seed {seed} step {step}: an expired worker is gone"
                            );
                        }
                        expired_ids += dead.len();
                        removed.extend(dead);
                    }
                }
                let view = m.view(now);
                assert_eq!(view.len(), model.len(), "seed {seed} step {step}: count");
                assert!(
                    view.windows(2).all(|w| w[0].info.id < w[1].info.id),
                    "seed {seed} step {step}: each id once, in order"
                );
                for (w, (id, h)) in view.iter().zip(&model) {
                    assert_eq!(w.info.id, *id, "seed {seed} step {step}");
                    assert_eq!(
                        w.info.addr,
                        info_from(*id, h.session).addr,
                        "seed {seed} step {step}: holder of {id}"
                    );
                    assert_eq!(
                        w.load.running, h.running,
                        "seed {seed} step {step}: load of {id}"
                    );
                    assert_eq!(
                        w.suspect,
                        !live(h, now),
                        "seed {seed} step {step}: suspicion of {id}"
                    );
                    assert!(
                        !expired_now || now.saturating_duration_since(h.last_seen) <= timeout,
                        "seed {seed} step {step}: {id} outlived its timeout"
                    );
                }
                for (id, session) in live_before {
                    if removed.contains(&id) {
                        continue;
                    }
                    let held = view.iter().find(|w| w.info.id == id);
                    assert_eq!(
                        held.map(|w| w.info.addr.clone()),
                        Some(info_from(id, session).addr),
                        "seed {seed} step {step}: live worker {id}'s entry was replaced"
                    );
                }
            }
            // Everyone falls silent: all expire, and nothing is left.
            now += timeout + ms(1);
            let all: Vec<u64> = model.keys().copied().collect();
            assert_eq!(m.expire(now), all, "seed {seed}: the silent expire");
            assert!(m.view(now).is_empty(), "seed {seed}: nothing left");
        }
        assert!(
            refused > 100 && taken_over > 100 && expired_ids > 100 && foreign_beats > 100,
            "the sequences hit every case: {refused} refused, {taken_over} taken over, \
             {expired_ids} expired, {foreign_beats} foreign heartbeats"
        );
    }

    #[test]
    fn oversized_or_repeated_descriptions_are_refused() {
        use dfut_net::wire::ResourceAmount;
        let disk = |name: &str| ResourceAmount {
            name: name.into(),
            amount: 1,
        };
        let mut ok = info(1);
        ok.resources = vec![disk("disk"), disk("licence")];
        assert_eq!(Membership::check(&ok), Ok(()));
        let mut twice = ok.clone();
        twice.resources.push(disk("disk"));
        assert!(Membership::check(&twice).unwrap_err().contains("twice"));
        let mut many = info(2);
        many.resources = (0..65).map(|i| disk(&format!("r{i}"))).collect();
        assert!(Membership::check(&many).is_err());
        let mut long = info(3);
        long.host = "h".repeat(257);
        assert!(Membership::check(&long).is_err());
        let mut unnamed = info(4);
        unnamed.resources = vec![disk("")];
        assert!(Membership::check(&unnamed).is_err());
    }
}
