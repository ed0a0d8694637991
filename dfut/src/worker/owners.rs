//! Which owners a worker serves, tied to a secret only each owner knows.
//!
//! An owner (a driver, or a worker making nested calls) names itself in
//! its first message on every connection with its node id and a random
//! per-process secret. The first connection of a node id binds the secret;
//! a later connection must show the same one, or it may not act for that
//! owner (submit its tasks, free or cancel its objects). An owner's objects
//! outlive its connections: they are freed only when no connection of it
//! has been open for the grace period (longer than a long pause of the
//! owner; see `WorkerConfig::owner_grace_ms`), so a reconnect, or another
//! connection closing, never frees a live owner's objects.
//!
//! Bound: one entry per owner with a connection open, or gone for less than
//! the grace period. Pure bookkeeping: time is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

struct Owner {
    secret: u128,
    links: u32,
    /// When its last connection closed; `None` while one is open.
    gone_since: Option<Instant>,
}

/// The owners of one worker.
#[derive(Default)]
pub(crate) struct Owners {
    owners: HashMap<u64, Owner>,
}

impl Owners {
    /// A connection says it speaks for `node` with `secret`: whether it
    /// does (the first to name the node binds its secret).
    pub fn claim(&mut self, node: u64, secret: u128) -> bool {
        let owner = self.owners.entry(node).or_insert(Owner {
            secret,
            links: 0,
            gone_since: None,
        });
        if owner.secret != secret {
            return false;
        }
        owner.links += 1;
        owner.gone_since = None;
        true
    }

    /// A connection that [`claim`](Self::claim)ed `node` closed at `now`.
    pub fn release(&mut self, node: u64, now: Instant) {
        if let Some(owner) = self.owners.get_mut(&node) {
            owner.links = owner.links.saturating_sub(1);
            if owner.links == 0 {
                owner.gone_since = Some(now);
            }
        }
    }

    /// Forgets, and returns, the owners with no connection for longer than
    /// `grace`: their objects and queued tasks are to be dropped.
    pub fn expire(&mut self, now: Instant, grace: Duration) -> Vec<u64> {
        let gone: Vec<u64> = self
            .owners
            .iter()
            .filter(|(_, o)| {
                o.gone_since
                    .is_some_and(|t| now.saturating_duration_since(t) > grace)
            })
            .map(|(node, _)| *node)
            .collect();
        for node in &gone {
            self.owners.remove(node);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);

    #[test]
    fn a_wrong_secret_cannot_speak_for_an_owner() {
        let mut o = Owners::default();
        assert!(o.claim(1, 11));
        assert!(!o.claim(1, 12));
        assert!(o.claim(1, 11), "the owner itself may open more");
        assert!(o.claim(2, 12), "another node binds its own");
    }

    #[test]
    fn objects_outlive_a_reconnect_and_go_after_the_grace_period() {
        let t0 = Instant::now();
        let mut o = Owners::default();
        assert!(o.claim(1, 11));
        assert!(o.claim(1, 11));
        o.release(1, t0);
        assert!(o.expire(t0 + GRACE * 2, GRACE).is_empty(), "one still open");
        o.release(1, t0);
        assert!(o.expire(t0 + GRACE, GRACE).is_empty(), "within the grace");
        // It comes back in time: nothing is freed.
        assert!(o.claim(1, 11));
        assert!(o.expire(t0 + GRACE * 3, GRACE).is_empty());
        o.release(1, t0 + GRACE * 3);
        assert_eq!(o.expire(t0 + GRACE * 5, GRACE), vec![1]);
        // Forgotten: the id is free again.
        assert!(o.claim(1, 99));
    }
}
