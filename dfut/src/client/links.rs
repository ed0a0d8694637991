//! The client's connections: one link per worker (and one to the
//! scheduler), opened on first use, with messages queued while connecting.
//!
//! Incoming messages on these links are completions, start notices and
//! fetched objects; each is handed to the object logic in the parent
//! module. A link that closes is treated as the loss of that worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dfut_net::wire::{Message, Role};
use dfut_net::{Inbox, Link};

use super::{Client, Fetched, lock};
use crate::Error;
use crate::object::Phase;

/// A scheduler silent this long, or for 20 of its ticks if that is longer
/// (it pushes a view every tick, 100 ms by default), is taken for dead,
/// and the client reconnects.
const SCHEDULER_SILENCE: Duration = Duration::from_secs(2);

/// How long after a failed connection with nothing to send (one opened to
/// hear a worker's output) another is tried.
const RETRY_LINK: Duration = Duration::from_secs(5);
/// Addresses remembered for [`RETRY_LINK`].
const MAX_IDLE_LINK_FAILURES: usize = 4096;

pub(super) enum LinkSlot {
    Ready(Link),
    Connecting(Vec<Message>),
}

impl Client {
    /// Sends `msg` to the process at `addr`, connecting first if needed.
    pub(crate) fn send(&self, addr: SocketAddr, msg: Message) {
        let mut links = lock(&self.inner.links);
        match links.get_mut(&addr) {
            Some(LinkSlot::Ready(link)) => {
                if link.send(msg).is_err() {
                    links.remove(&addr);
                    drop(links);
                    self.worker_lost(addr, "connection closed");
                }
            }
            Some(LinkSlot::Connecting(queue)) => queue.push(msg),
            None => {
                links.insert(addr, LinkSlot::Connecting(vec![msg]));
                drop(links);
                let client = self.clone();
                self.inner
                    .handle
                    .spawn(async move { client.connect(addr).await });
            }
        }
    }

    /// Opens a link to `addr` unless one is open or opening, or an
    /// attempt with nothing to send failed in the last [`RETRY_LINK`].
    pub(crate) fn open_link(&self, addr: SocketAddr) {
        let failed = lock(&self.inner.idle_link_failures).get(&addr).copied();
        if failed.is_some_and(|at| at.elapsed() < RETRY_LINK) {
            return;
        }
        let mut links = lock(&self.inner.links);
        if links.contains_key(&addr) {
            return;
        }
        links.insert(addr, LinkSlot::Connecting(Vec::new()));
        drop(links);
        let client = self.clone();
        self.inner
            .handle
            .spawn(async move { client.connect(addr).await });
    }

    async fn connect(self, addr: SocketAddr) {
        let (link, inbox) = match self.inner.endpoint.connect(addr).await {
            Ok(pair) => pair,
            Err(e) => {
                let queued = lock(&self.inner.links).remove(&addr);
                if matches!(&queued, Some(LinkSlot::Connecting(q)) if q.is_empty()) {
                    // Opened only to hear what the worker prints: nothing
                    // was sent or is held there, so nothing is lost; try
                    // again later.
                    tracing::debug!(worker = %addr, "no connection for its output: {e}");
                    let mut failures = lock(&self.inner.idle_link_failures);
                    failures.retain(|_, at| at.elapsed() < RETRY_LINK);
                    if failures.len() < MAX_IDLE_LINK_FAILURES {
                        failures.insert(addr, std::time::Instant::now());
                    }
                    return;
                }
                // The tasks queued for this connection never left.
                let never_sent = match queued {
                    Some(LinkSlot::Connecting(queue)) => queue
                        .iter()
                        .filter_map(|m| match m {
                            Message::Submit(tasks) => Some(tasks.iter().map(|t| t.id)),
                            _ => None,
                        })
                        .flatten()
                        .collect(),
                    _ => std::collections::HashSet::new(),
                };
                self.worker_unreached(addr, &format!("could not connect: {e}"), &never_sent);
                return;
            }
        };
        let hello = Message::Hello {
            node: self.inner.node,
            role: Role::Client,
            secret: self.inner.secret,
        };
        {
            let mut links = lock(&self.inner.links);
            let queued = match links.insert(addr, LinkSlot::Ready(link.clone())) {
                Some(LinkSlot::Connecting(q)) => q,
                _ => Vec::new(),
            };
            // Sent under the lock so nothing sent meanwhile overtakes them.
            let _ = link.send(hello);
            if self
                .inner
                .worker_logs
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                let _ = link.send(Message::WantLogs);
            }
            for msg in queued {
                let _ = link.send(msg);
            }
        }
        self.serve_inbox(addr, inbox).await;
        let still_ours = matches!(
            lock(&self.inner.links).get(&addr),
            Some(LinkSlot::Ready(l)) if l.id() == link.id()
        );
        if still_ours {
            lock(&self.inner.links).remove(&addr);
        }
        self.worker_lost(addr, "connection closed");
    }

    /// Hands a fetch's answer to whoever asked for it.
    fn fetched(&self, req: u64, result: crate::Result<Fetched>) {
        let pending = lock(&self.inner.fetches).remove(&req);
        if let Some(p) = pending {
            let _ = p.reply.send(result);
        }
    }

    async fn serve_inbox(&self, addr: SocketAddr, mut inbox: Inbox) {
        while let Some(msg) = inbox.recv().await {
            match msg {
                Ok(Message::Started(id)) => {
                    let cell = lock(&self.inner.objects).get(&id).cloned();
                    if let Some(cell) = cell {
                        let confirm = {
                            let mut st = cell.lock();
                            if matches!(st.phase, Phase::Pending(h) if h == addr) {
                                st.phase = Phase::Running(addr);
                            }
                            st.task.as_ref().is_some_and(|t| t.lost_runs > 0)
                        };
                        if confirm {
                            self.send(addr, Message::Confirmed(id));
                        }
                    }
                }
                Ok(Message::Done {
                    id,
                    outcome,
                    running,
                    queued,
                    exec_us,
                }) => self.task_done(addr, id, outcome, (running, queued), exec_us),
                Ok(Message::Blocked(id)) => self.task_blocked(addr, id, true),
                Ok(Message::Resumed(id)) => self.task_blocked(addr, id, false),
                Ok(Message::Fetched { req, result }) => {
                    let result = result
                        .map(|b| Fetched::Bytes(crate::blob::blob(b)))
                        .map_err(|f| Error::from_failure("fetch", &addr.to_string(), &f));
                    self.fetched(req, result);
                }
                Ok(Message::FetchedShared { req, path, len }) => {
                    self.fetched(req, Ok(Fetched::Shared { path, len }));
                }
                Ok(Message::Bulk { req, payload }) => {
                    let result = match payload.into_shared() {
                        Some(bytes) => Ok(Fetched::Bytes(Arc::new(bytes.into()))),
                        None => Err(Error::Decode("an empty bulk payload".into())),
                    };
                    self.fetched(req, result);
                }
                Ok(Message::Logs {
                    pid,
                    lines,
                    dropped,
                }) => self.print_worker_lines(addr, pid, lines, dropped),
                Ok(Message::RefQuery { req, ids }) => {
                    let refs = self.references(&ids);
                    self.send(addr, Message::RefReply { req, refs });
                }
                Ok(Message::Goodbye) => return,
                Ok(other) => {
                    tracing::warn!(peer = %addr, "unexpected message on a client link: {other:?}");
                }
                Err(e) => {
                    tracing::warn!(peer = %addr, "link failed: {e}");
                    return;
                }
            }
        }
    }

    /// Connects to the scheduler at `addr` and follows its view of the
    /// cluster. The first connection must succeed; after that a lost
    /// connection is retried with backoff (100 ms doubling to 2 s) and the
    /// view re-subscribed, while the workers already known stay in use.
    pub(crate) async fn follow_scheduler(&self, addr: SocketAddr) -> crate::Result<()> {
        let first = self.subscribe(addr).await?;
        let _ = self.inner.scheduler.set(addr);
        let client = self.clone();
        self.inner.handle.spawn(async move {
            let mut session = Some(first);
            let mut backoff = crate::backoff::Backoff::new();
            while !client.is_closed() {
                let (link, mut inbox) = match session.take() {
                    Some(s) => s,
                    None => match client.subscribe(addr).await {
                        Ok(s) => {
                            tracing::info!(scheduler = %addr, "following the scheduler again");
                            // A restarted scheduler knows no worker until
                            // they register again: keep ours meanwhile.
                            client.keep_workers_for(super::REJOIN_GRACE);
                            backoff.reset();
                            s
                        }
                        Err(e) => {
                            tracing::debug!(scheduler = %addr, "cannot reach the scheduler: {e}");
                            backoff.wait().await;
                            continue;
                        }
                    },
                };
                // The scheduler sends a view every tick: silence for many
                // ticks means it died (a dead process closes nothing), so
                // reconnect without waiting for the idle timeout.
                let mut silence = SCHEDULER_SILENCE;
                while let Ok(Some(msg)) = tokio::time::timeout(silence, inbox.recv()).await {
                    match msg {
                        Ok(Message::View {
                            mode,
                            workers,
                            tick_ms,
                        }) => {
                            silence = SCHEDULER_SILENCE
                                .max(Duration::from_millis(u64::from(tick_ms)) * 20);
                            client.set_view(mode, workers);
                        }
                        Ok(Message::WorkerLost { id }) => {
                            if let Some(a) = client.worker_addr(id) {
                                client.worker_lost(a, "missed its heartbeats");
                            }
                        }
                        Ok(Message::TasksRequest { req, limit, state }) => {
                            let tasks = if crate::inspect::lists_backlogs(state) {
                                client.backlog_listing(limit)
                            } else {
                                Vec::new()
                            };
                            let fetches = Vec::new();
                            let _ = link.send(Message::TasksReply {
                                req,
                                tasks,
                                fetches,
                            });
                        }
                        Ok(other) => {
                            tracing::warn!("unexpected message from the scheduler: {other:?}")
                        }
                        Err(e) => {
                            tracing::warn!("scheduler link failed: {e}");
                            break;
                        }
                    }
                }
                if !client.is_closed() {
                    tracing::warn!(scheduler = %addr, "lost the scheduler; reconnecting");
                }
            }
        });
        Ok(())
    }

    async fn subscribe(&self, addr: SocketAddr) -> crate::Result<(Link, Inbox)> {
        let (link, inbox) = self.inner.endpoint.connect(addr).await?;
        link.send(Message::Hello {
            node: self.inner.node,
            role: Role::Client,
            secret: self.inner.secret,
        })?;
        link.send(Message::Subscribe)?;
        Ok((link, inbox))
    }
}
