//! `dfut objects` on a worker: its largest objects, each with the
//! references its owner holds, asked of the owner over its connection.
//!
//! Bounds: at most [`MAX_WAITING`] questions to owners wait at once (more
//! are not asked, and list no reference count); each waits at most
//! [`PATIENCE`]; one listing names at most [`MAX_LISTED`] objects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dfut_net::Link;
use dfut_net::wire::{Message, ObjectId, ObjectListing};
use tokio::sync::oneshot;

use super::Shared;
use crate::lock;

/// How long a worker waits for owners to say how they reference objects.
const PATIENCE: Duration = Duration::from_secs(2);
/// Questions to owners waiting at once, on one worker.
const MAX_WAITING: usize = 1024;
/// Objects in one listing.
pub(crate) const MAX_LISTED: u32 = 1000;

/// References and function name of each object asked about.
type Refs = Vec<(u32, String)>;

/// Questions sent to owners, by request number.
#[derive(Default)]
pub(crate) struct RefQueries {
    next: u64,
    waiting: HashMap<u64, (u64, oneshot::Sender<Refs>)>,
}

impl RefQueries {
    /// A new question for `owner`, unless too many wait.
    fn ask(&mut self, owner: u64) -> Option<(u64, oneshot::Receiver<Refs>)> {
        if self.waiting.len() >= MAX_WAITING {
            return None;
        }
        self.next += 1;
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(self.next, (owner, tx));
        Some((self.next, rx))
    }

    /// `owner` answered question `req`; an answer from anyone else, or to
    /// a question no longer waiting, is ignored.
    pub fn answered(&mut self, owner: Option<u64>, req: u64, refs: Refs) {
        if self
            .waiting
            .get(&req)
            .is_some_and(|(o, _)| Some(*o) == owner)
            && let Some((_, tx)) = self.waiting.remove(&req)
        {
            let _ = tx.send(refs);
        }
    }
}

/// Answers a tool's `ObjectsRequest` on `link` (spawned: it waits for
/// owners).
pub(crate) async fn serve(shared: Arc<Shared>, link: Link, req: u64, limit: u32) {
    let listed = lock(&shared.store).largest(limit.min(MAX_LISTED) as usize);
    let mut by_owner: HashMap<u64, Vec<ObjectId>> = HashMap::new();
    for (id, ..) in &listed {
        by_owner.entry(id.owner).or_default().push(*id);
    }
    let mut asked = Vec::new();
    for (owner, ids) in by_owner {
        let Some(owner_link) = lock(&shared.owner_links).get(&owner).cloned() else {
            continue;
        };
        let Some((q, rx)) = lock(&shared.ref_queries).ask(owner) else {
            continue;
        };
        if owner_link
            .send(Message::RefQuery {
                req: q,
                ids: ids.clone(),
            })
            .is_ok()
        {
            asked.push((q, ids, rx));
        } else {
            lock(&shared.ref_queries).waiting.remove(&q);
        }
    }
    let mut known: HashMap<ObjectId, (u32, String)> = HashMap::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for (q, ids, rx) in asked {
        if let Ok(Ok(refs)) = tokio::time::timeout_at(deadline, rx).await {
            known.extend(ids.into_iter().zip(refs));
        }
        lock(&shared.ref_queries).waiting.remove(&q);
    }
    let holder = shared.addr.to_string();
    let objects = listed
        .into_iter()
        .map(|(id, bytes, state)| {
            let (refs, function) = match known.remove(&id) {
                Some((n, f)) => (Some(n), f),
                None => (None, String::new()),
            };
            let mut listing = ObjectListing::new(id, state, holder.clone());
            listing.bytes = bytes;
            listing.refs = refs;
            listing.function = function;
            listing
        })
        .collect();
    let _ = link.send(Message::ObjectsReply { req, objects });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_asked_can_answer_and_the_waiting_are_bounded() {
        let mut q = RefQueries::default();
        let (req, mut rx) = q.ask(7).unwrap();
        q.answered(Some(8), req, vec![(1, "f".into())]);
        assert!(rx.try_recv().is_err(), "another owner cannot answer");
        q.answered(Some(7), req, vec![(2, "f".into())]);
        assert_eq!(rx.try_recv().unwrap(), vec![(2, "f".to_owned())]);
        assert!(q.waiting.is_empty());
        for _ in 0..MAX_WAITING {
            assert!(q.ask(1).is_some());
        }
        assert!(q.ask(1).is_none(), "at most {MAX_WAITING} wait");
    }
}
