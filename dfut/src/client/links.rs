//! The client's connections: one link per worker (and one to the
//! scheduler), opened on first use, with messages queued while connecting.
//!
//! Incoming messages on these links are completions, start notices and
//! fetched objects; each is handed to the object logic in the parent
//! module. A link that closes is treated as the loss of that worker.

use std::net::SocketAddr;
use std::sync::Arc;

use dfut_net::wire::{Message, Role};
use dfut_net::{Inbox, Link};

use super::{Client, lock};
use crate::Error;
use crate::object::Phase;

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

    async fn connect(self, addr: SocketAddr) {
        let (link, inbox) = match self.inner.endpoint.connect(addr).await {
            Ok(pair) => pair,
            Err(e) => {
                lock(&self.inner.links).remove(&addr);
                self.worker_lost(addr, &format!("could not connect: {e}"));
                return;
            }
        };
        let hello = Message::Hello {
            node: self.inner.node,
            role: Role::Client,
        };
        {
            let mut links = lock(&self.inner.links);
            let queued = match links.insert(addr, LinkSlot::Ready(link.clone())) {
                Some(LinkSlot::Connecting(q)) => q,
                _ => Vec::new(),
            };
            // Sent under the lock so nothing sent meanwhile overtakes them.
            let _ = link.send(hello);
            for msg in queued {
                let _ = link.send(msg);
            }
        }
        self.serve_inbox(addr, inbox).await;
        let still_ours = matches!(
            lock(&self.inner.links).get(&addr),
            Some(LinkSlot::Ready(l)) if l.peer() == link.peer()
        );
        if still_ours {
            lock(&self.inner.links).remove(&addr);
        }
        self.worker_lost(addr, "connection closed");
    }

    async fn serve_inbox(&self, addr: SocketAddr, mut inbox: Inbox) {
        while let Some(msg) = inbox.recv().await {
            match msg {
                Ok(Message::Started(id)) => {
                    let cell = lock(&self.inner.objects).get(&id).cloned();
                    if let Some(cell) = cell {
                        let mut st = cell.lock();
                        if matches!(st.phase, Phase::Pending(h) if h == addr) {
                            st.phase = Phase::Running(addr);
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
                Ok(Message::Fetched { req, result }) => {
                    let pending = lock(&self.inner.fetches).remove(&req);
                    if let Some(p) = pending {
                        let result = result
                            .map(Arc::new)
                            .map_err(|f| Error::from_failure("fetch", &addr.to_string(), &f));
                        let _ = p.reply.send(result);
                    }
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
    /// cluster until the connection ends.
    pub(crate) async fn follow_scheduler(&self, addr: SocketAddr) -> crate::Result<()> {
        let (link, mut inbox) = self.inner.endpoint.connect(addr).await?;
        link.send(Message::Hello {
            node: self.inner.node,
            role: Role::Client,
        })?;
        link.send(Message::Subscribe)?;
        let client = self.clone();
        self.inner.handle.spawn(async move {
            let _link = link;
            while let Some(msg) = inbox.recv().await {
                match msg {
                    Ok(Message::View { mode, workers }) => client.set_view(mode, workers),
                    Ok(Message::WorkerLost { id }) => {
                        if let Some(a) = client.worker_addr(id) {
                            client.worker_lost(a, "missed its heartbeats");
                        }
                    }
                    Ok(other) => tracing::warn!("unexpected message from the scheduler: {other:?}"),
                    Err(e) => {
                        tracing::warn!("scheduler link failed: {e}");
                        break;
                    }
                }
            }
        });
        Ok(())
    }
}
