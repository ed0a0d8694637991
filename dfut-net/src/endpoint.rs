//! QUIC endpoints and the message links that run over them.
//!
//! An [`Endpoint`] is one UDP socket that both accepts and starts
//! connections, always with mutual TLS from the cluster credential. A
//! connection carries one [`Link`]: a bidirectional stream of frames. Sending
//! never blocks: messages queue to a writer task that coalesces everything
//! queued into one write, which is what makes small messages cheap. Received
//! messages arrive in an [`Inbox`]. A bad frame closes that one connection
//! and is reported through the inbox; the endpoint keeps serving others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{ConnectionError, RecvStream, SendStream, TransportConfig, VarInt};
use tokio::io::BufReader;
use tokio::sync::mpsc;

use crate::auth::SERVER_NAME;
use crate::frame::{self, FrameReader};
use crate::wire::{Message, Payload};
use crate::{Cause, ClusterCredential, NetError};

/// Application close code for a connection closed because of a bad frame.
const CLOSE_BAD_FRAME: u32 = 1;
/// Application close code for an orderly close.
const CLOSE_NORMAL: u32 = 0;
/// Most bytes coalesced into one write.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Bytes (estimated from each message's size) queued on one link past which, if nothing
/// has been written for [`STALL`], the peer is taken for one that does not
/// read and the connection is closed: what one such connection can pin in
/// its sender's memory. A burst to a peer that reads is never cut off.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
/// How long a link's writer may make no progress, with more than
/// [`MAX_QUEUED_BYTES`] queued, before its peer is cut off.
pub const STALL: Duration = Duration::from_secs(5);
/// Bulk payloads being written at once on one link; the writer waits for
/// one to end before starting more (so a peer that reads none stalls it).
const BULK_IN_FLIGHT: usize = 64;
/// Application close code for a peer that does not read.
const CLOSE_SLOW: u32 = 2;
/// Received messages buffered per link before the reader waits.
const INBOX_DEPTH: usize = 8192;
/// Bulk streams a peer may have open towards us at once: with the
/// connection's receive window, what bounds the memory one connection's
/// bulk transfers can pin before dfut reads them.
const MAX_BULK_STREAMS: u32 = 16;
/// Bytes a peer may send on one stream ahead of what dfut has read.
const STREAM_WINDOW: u32 = 8 << 20;
/// Bytes a peer may send on one connection, all streams together, ahead of
/// what dfut has read: the most one connection pins in a receiver. Twice a
/// stream's window so two transfers overlap. Larger windows let a sender
/// run further ahead of a busy receiver, whose kernel then drops what
/// overflows the socket's buffer ([`SOCKET_BUFFER`]): on loopback,
/// windows of 16 MiB (stream) and 64 MiB (connection) lost 600-1,800
/// packets per 256 MiB moved and recovering once took seconds; 8 and 16
/// MiB lost none.
const CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest datagram MTU discovery probes for. quinn hands the kernel up
/// to 10 datagrams in one segmentation-offload send, and the kernel
/// refuses a send over 65,507 bytes (the largest UDP payload), silently
/// losing all ten: so 10 datagrams must fit in one send. Larger datagrams
/// were lost this way, which read as a black hole and dropped the path
/// back to 1,200-byte datagrams.
const MAX_DATAGRAM: u16 = 6_500;
/// Kernel buffer asked for each UDP socket, each way. A burst larger than
/// the receive buffer is dropped by the kernel before quinn reads it
/// (and then resent); Linux caps the size at `net.core.rmem_max` and
/// `net.core.wmem_max` (often 208 KiB: raise them on busy hosts). One
/// socket per endpoint (a process has one, or two when it also runs the
/// scheduler), whatever the number of connections.
const SOCKET_BUFFER: usize = 4 << 20;
/// Bytes of a bulk stream's header: the request number and the length.
const BULK_HEADER: usize = 16;

/// Tunables of an endpoint. Outside this crate, start from
/// `EndpointOptions::default()` and set fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointOptions {
    /// Largest frame accepted from a peer.
    pub max_frame: usize,
    /// A connection with no traffic for this long is lost.
    pub idle_timeout: Duration,
    /// Interval of keep-alive packets on idle connections.
    pub keep_alive: Duration,
    /// Largest bulk payload ([`Message::Bulk`]) accepted from a peer.
    pub max_bulk: u64,
    /// Handshakes in progress at once; past it, new attempts are refused
    /// (a member retries with backoff). Bounds the work an unauthenticated
    /// flood can cost.
    pub max_handshakes: usize,
    /// Accepted connections open at once; past it, new attempts are
    /// refused until one closes. Bounds the memory peers can pin by
    /// holding connections open (each costs about 100 KiB).
    pub max_connections: usize,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        Self {
            max_frame: frame::DEFAULT_MAX_FRAME,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            max_bulk: u64::MAX,
            max_handshakes: 64,
            max_connections: 1024,
        }
    }
}

/// A QUIC endpoint that accepts and starts authenticated connections.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    options: Arc<EndpointOptions>,
    /// One permit per handshake in progress (`max_handshakes`).
    handshakes: Arc<tokio::sync::Semaphore>,
    /// One permit per accepted connection open (`max_connections`).
    connections: Arc<tokio::sync::Semaphore>,
    /// QUIC Retry packets sent to unvalidated addresses, since binding.
    retries: Arc<std::sync::atomic::AtomicU64>,
}

impl Endpoint {
    /// Binds a UDP socket at `addr` (port 0 for any free port). Must be called
    /// inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        credential: &ClusterCredential,
        options: EndpointOptions,
    ) -> Result<Self, NetError> {
        let transport = Arc::new(transport_config(&options)?);
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(credential.server_config()?));
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(Arc::new(credential.client_config()?));
        client.transport_config(transport);
        let socket = std::net::UdpSocket::bind(addr)
            .map_err(|e| NetError::Endpoint(Cause::context(format!("bind {addr}"), e)))?;
        size_buffers(&socket);
        let mut config = quinn::EndpointConfig::default();
        // Accept datagrams as large as MTU discovery may find (below).
        config
            .max_udp_payload_size(MAX_DATAGRAM)
            .map_err(|e| NetError::Endpoint(Cause::context("datagram size", e)))?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| NetError::Endpoint(Cause::msg("no async runtime")))?;
        let mut endpoint = quinn::Endpoint::new(config, Some(server), socket, runtime)
            .map_err(|e| NetError::Endpoint(Cause::context(format!("bind {addr}"), e)))?;
        endpoint.set_default_client_config(client);
        Ok(Self {
            inner: endpoint,
            handshakes: Arc::new(tokio::sync::Semaphore::new(options.max_handshakes.max(1))),
            connections: Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1))),
            retries: Arc::default(),
            options: Arc::new(options),
        })
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.inner
            .local_addr()
            .map_err(|e| NetError::Endpoint(Cause::new(e)))
    }

    /// Connects to the endpoint at `addr` and opens a link to it.
    pub async fn connect(&self, addr: SocketAddr) -> Result<(Link, Inbox), NetError> {
        let (conn, send, recv) = self.connect_raw(addr).await?;
        Ok(Link::start(conn, send, recv, &self.options))
    }

    /// Connects and opens a raw stream, bypassing framing: for tests and
    /// tools that need to write arbitrary bytes at a peer.
    #[doc(hidden)]
    pub async fn connect_raw(
        &self,
        addr: SocketAddr,
    ) -> Result<(quinn::Connection, SendStream, RecvStream), NetError> {
        let connecting = self
            .inner
            .connect(addr, SERVER_NAME)
            .map_err(|e| NetError::Endpoint(Cause::context(format!("connect {addr}"), e)))?;
        let conn = connecting.await.map_err(|e| classify(addr, &e))?;
        let (send, recv) = conn.open_bi().await.map_err(|e| classify(addr, &e))?;
        Ok((conn, send, recv))
    }

    /// Waits for the next incoming connection. `None` once the endpoint is
    /// closed. Finish the handshake with [`Incoming::establish`], ideally in a
    /// task of its own so one slow peer does not hold up the others.
    ///
    /// Attempts from an address not yet validated get a QUIC Retry first
    /// (no handshake is spent on a spoofed source), and past
    /// `max_handshakes` in progress new attempts are refused; refusals are
    /// logged at most once a second.
    pub async fn accept(&self) -> Option<Incoming> {
        loop {
            let incoming = self.inner.accept().await?;
            if !incoming.remote_address_validated() && incoming.may_retry() {
                // Only fails for an already validated address (checked).
                if incoming.retry().is_ok() {
                    self.retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                continue;
            }
            let handshake = self.handshakes.clone().try_acquire_owned();
            let connection = self.connections.clone().try_acquire_owned();
            match (handshake, connection) {
                (Ok(permit), Ok(open)) => {
                    return Some(Incoming {
                        incoming,
                        options: self.options.clone(),
                        _permit: permit,
                        open,
                    });
                }
                (Err(_), _) => {
                    let from = incoming.remote_address();
                    incoming.refuse();
                    crate::refusals::refused(from, &"too many handshakes in progress");
                }
                (_, Err(_)) => {
                    let from = incoming.remote_address();
                    incoming.refuse();
                    crate::refusals::refused(from, &"too many connections open");
                }
            }
        }
    }

    /// QUIC Retry packets this endpoint has sent (one per attempt from an
    /// address not yet validated), since it was bound.
    pub fn retries_sent(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes every connection of this endpoint at once.
    pub fn close(&self) {
        self.inner
            .close(VarInt::from_u32(CLOSE_NORMAL), b"endpoint closed");
    }
}

/// A connection attempt that has reached an endpoint.
#[derive(Debug)]
pub struct Incoming {
    incoming: quinn::Incoming,
    options: Arc<EndpointOptions>,
    /// Held until the handshake ends (or the attempt is dropped).
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// Held until the connection closes.
    open: tokio::sync::OwnedSemaphorePermit,
}

impl Incoming {
    /// The address the attempt came from.
    pub fn remote_addr(&self) -> SocketAddr {
        self.incoming.remote_address()
    }

    /// Completes the handshake (which fails with [`NetError::Auth`] for a
    /// peer without the cluster credential) and waits for the peer's link.
    pub async fn establish(self) -> Result<(Link, Inbox), NetError> {
        let Incoming {
            incoming,
            options,
            _permit,
            open,
        } = self;
        let addr = incoming.remote_address();
        let conn = incoming.await.map_err(|e| classify(addr, &e))?;
        drop(_permit);
        // The connection counts as open until it closes, however it ends.
        let closing = conn.clone();
        tokio::spawn(async move {
            closing.closed().await;
            drop(open);
        });
        let (send, recv) = conn.accept_bi().await.map_err(|e| classify(addr, &e))?;
        Ok(Link::start(conn, send, recv, &options))
    }
}

/// The sending half of a connection. Cheap to clone; the connection closes
/// when every clone and the [`Inbox`] are dropped, or on [`Link::close`].
#[derive(Debug, Clone)]
pub struct Link {
    /// Messages to write, each with its weight (counted in `queue`).
    tx: mpsc::UnboundedSender<(Message, usize)>,
    conn: quinn::Connection,
    /// What is queued, and when the writer last made progress.
    queue: Arc<QueueState>,
}

/// A link's queue, shared by its senders and its writer.
#[derive(Debug)]
struct QueueState {
    /// Estimated bytes queued and not yet written ([`weight`]).
    bytes: std::sync::atomic::AtomicUsize,
    /// When the writer last finished a write, or the queue last started
    /// filling, in milliseconds since `epoch`.
    progress_ms: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
}

impl QueueState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn progressed(&self) {
        self.progress_ms
            .store(self.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl Link {
    fn start(
        conn: quinn::Connection,
        send: SendStream,
        recv: RecvStream,
        options: &EndpointOptions,
    ) -> (Link, Inbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::channel(INBOX_DEPTH);
        let queue = Arc::new(QueueState {
            bytes: std::sync::atomic::AtomicUsize::new(0),
            progress_ms: std::sync::atomic::AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        });
        tokio::spawn(write_loop(rx, send, conn.clone(), queue.clone()));
        tokio::spawn(bulk_loop(conn.clone(), in_tx.clone(), options.max_bulk));
        tokio::spawn(read_loop(recv, conn.clone(), in_tx, options.max_frame));
        (
            Link {
                tx,
                conn: conn.clone(),
                queue,
            },
            Inbox { rx: in_rx, conn },
        )
    }

    /// Queues `msg` for sending. Fails when the connection is gone, or
    /// when the peer does not read: more than [`MAX_QUEUED_BYTES`] wait to
    /// be written and the writer has made no progress for [`STALL`]; then
    /// the connection is closed.
    pub fn send(&self, msg: Message) -> Result<(), NetError> {
        use std::sync::atomic::Ordering;
        let q = &self.queue;
        let weight = weight(&msg);
        let before = q.bytes.fetch_add(weight, Ordering::Relaxed);
        if before == 0 {
            // The queue starts filling: the writer's clock starts now.
            q.progressed();
        } else if before + weight > MAX_QUEUED_BYTES
            && q.now_ms()
                .saturating_sub(q.progress_ms.load(Ordering::Relaxed))
                > STALL.as_millis() as u64
        {
            q.bytes.fetch_sub(weight, Ordering::Relaxed);
            let reason = format!(
                "the peer does not read: {before} bytes wait to be sent, none written for {STALL:?}"
            );
            tracing::warn!(peer = %self.peer(), "closing: {reason}");
            self.conn
                .close(VarInt::from_u32(CLOSE_SLOW), b"not reading");
            return Err(NetError::ConnectionLost {
                peer: self.peer(),
                reason,
                source: None,
            });
        }
        self.tx.send((msg, weight)).map_err(|_| {
            q.bytes.fetch_sub(weight, Ordering::Relaxed);
            self.lost()
        })
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// An identifier of the connection, the same for every clone of this
    /// link and unique among the endpoint's live connections.
    pub fn id(&self) -> usize {
        self.conn.stable_id()
    }

    /// How the connection's network path is doing, for tools and tuning.
    pub fn path_stats(&self) -> PathStats {
        let path = self.conn.stats().path;
        PathStats {
            rtt: path.rtt,
            datagram_size: path.current_mtu,
            sent_packets: path.sent_packets,
            lost_packets: path.lost_packets,
            congestion_window: path.cwnd,
        }
    }

    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        self.conn.close_reason().is_none() && !self.tx.is_closed()
    }

    /// Closes the connection now, dropping whatever is still queued.
    pub fn close(&self, reason: &str) {
        self.conn
            .close(VarInt::from_u32(CLOSE_NORMAL), reason.as_bytes());
    }

    /// Waits until the connection is closed and says why.
    pub async fn closed(&self) -> NetError {
        let err = self.conn.closed().await;
        classify(self.peer(), &err)
    }

    fn lost(&self) -> NetError {
        match self.conn.close_reason() {
            Some(e) => classify(self.peer(), &e),
            None => NetError::ConnectionLost {
                peer: self.peer(),
                reason: "link writer stopped".into(),
                source: None,
            },
        }
    }
}

/// A connection's network path, as [`Link::path_stats`] reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct PathStats {
    /// The current estimate of the round-trip time.
    pub rtt: Duration,
    /// The largest UDP payload in use: what MTU discovery found, at most
    /// 6,500 bytes.
    pub datagram_size: u16,
    /// Packets sent on the connection so far.
    pub sent_packets: u64,
    /// Packets declared lost so far (and sent again when they carried
    /// data).
    pub lost_packets: u64,
    /// The congestion window, in bytes.
    pub congestion_window: u64,
}

/// The receiving half of a connection.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Result<Message, NetError>>,
    conn: quinn::Connection,
}

impl Inbox {
    /// The next message. After an error (a bad frame, a lost connection)
    /// comes `None`: the connection is closed.
    pub async fn recv(&mut self) -> Option<Result<Message, NetError>> {
        self.rx.recv().await
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.conn.remote_address()
    }
}

/// Asks for [`SOCKET_BUFFER`] each way; the kernel may give less (its
/// limits are logged at debug level), which costs speed, not correctness.
fn size_buffers(socket: &std::net::UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    let recv = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let send = sock.set_send_buffer_size(SOCKET_BUFFER);
    if let (Err(e), _) | (_, Err(e)) = (recv, send) {
        tracing::debug!("UDP buffer size: {e}");
    }
    tracing::debug!(
        recv = ?sock.recv_buffer_size(),
        send = ?sock.send_buffer_size(),
        "UDP socket buffers (the kernel doubles what is asked, up to its cap, for its own bookkeeping)"
    );
}

fn transport_config(options: &EndpointOptions) -> Result<TransportConfig, NetError> {
    let mut t = TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(options.idle_timeout)
        .map_err(|e| NetError::Endpoint(Cause::context("idle timeout", e)))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(options.keep_alive));
    // Windows large enough that bulk transfers (large objects) do not
    // stall on flow control, small enough that one connection's burst
    // fits the socket's receive buffer (see `CONNECTION_WINDOW`).
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(VarInt::from_u32(CONNECTION_WINDOW));
    t.send_window(64 << 20);
    t.max_concurrent_uni_streams(VarInt::from_u32(MAX_BULK_STREAMS));
    // Probe for datagrams up to 6,500 bytes where the path allows
    // (loopback, jumbo frames): fewer packets to encrypt and send per
    // byte. Paths with a 1500-byte MTU stay near 1,452.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_DATAGRAM);
    t.mtu_discovery_config(Some(mtu));
    Ok(t)
}

/// Turns a connection error into a `NetError`, recognising TLS failures
/// (QUIC crypto error codes 0x100..=0x1ff) as authentication failures.
fn classify(peer: SocketAddr, e: &ConnectionError) -> NetError {
    let crypto = |code: quinn::TransportErrorCode| (0x100..=0x1ff).contains(&u64::from(code));
    match e {
        ConnectionError::TransportError(t) if crypto(t.code) => NetError::Auth {
            peer,
            reason: t.to_string(),
        },
        ConnectionError::ConnectionClosed(c) if crypto(c.error_code) => NetError::Auth {
            peer,
            reason: c.to_string(),
        },
        other => NetError::ConnectionLost {
            peer,
            reason: other.to_string(),
            source: Some(Cause::new(other.clone())),
        },
    }
}

/// Whether a connection ended by an orderly close from either side.
fn closed_normally(e: &ConnectionError) -> bool {
    match e {
        ConnectionError::ApplicationClosed(c) => c.error_code == VarInt::from_u32(CLOSE_NORMAL),
        ConnectionError::LocallyClosed => true,
        _ => false,
    }
}

/// What a message weighs in a link's queue: about its encoded size (a
/// bulk payload is shared, not copied, so it weighs little).
fn weight(msg: &Message) -> usize {
    use crate::wire::{Arg, Item, Outcome};
    const SMALL: usize = 64;
    let arg = |a: &Arg| match a {
        Arg::Value(v) => v.len(),
        Arg::List(items) => items
            .iter()
            .map(|i| match i {
                Item::Value(v) => v.len(),
                Item::Ref { holder, .. } => SMALL + holder.len(),
            })
            .sum(),
        Arg::Ref { holder, .. } => holder.len(),
        Arg::Shared { path, .. } => path.len(),
        Arg::Pushed { .. } => 0,
    };
    SMALL
        + match msg {
            Message::Submit(tasks) => tasks
                .iter()
                .map(|t| SMALL + t.function.len() + t.args.iter().map(arg).sum::<usize>())
                .sum(),
            Message::Done {
                outcome: Outcome::Inline(v),
                ..
            } => v.len(),
            Message::Done {
                outcome: Outcome::Failed(f),
                ..
            }
            | Message::Fetched { result: Err(f), .. } => {
                f.message.len()
                    + f.backtrace.len()
                    + f.causes.iter().map(String::len).sum::<usize>()
            }
            Message::Fetched { result: Ok(v), .. } => v.len(),
            Message::View { workers, .. } => 256 * workers.len(),
            Message::StatusReply(status) => 256 * status.workers.len(),
            Message::ObjectsReply { objects, .. } => 128 * objects.len(),
            Message::Logs { lines, .. } => lines.iter().map(|l| 16 + l.text.len()).sum(),
            Message::MetricsReply { functions, .. } => {
                functions.iter().map(|f| 160 + f.function.len()).sum()
            }
            Message::TasksReply { tasks, fetches, .. } => {
                tasks.iter().map(|t| 128 + t.error.len()).sum::<usize>() + 128 * fetches.len()
            }
            Message::RefReply { refs, .. } => refs.iter().map(|(_, f)| 8 + f.len()).sum(),
            Message::Free(ids) | Message::Cancel(ids) | Message::RefQuery { ids, .. } => {
                16 * ids.len()
            }
            _ => 0,
        }
}

async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<(Message, usize)>,
    mut send: SendStream,
    conn: quinn::Connection,
    queue: Arc<QueueState>,
) {
    let bulk = Arc::new(tokio::sync::Semaphore::new(BULK_IN_FLIGHT));
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut next = Some(first);
        while let Some((msg, weight)) = next.take() {
            queue
                .bytes
                .fetch_sub(weight, std::sync::atomic::Ordering::Relaxed);
            if let Message::Bulk { req, payload } = msg {
                let Ok(permit) = bulk.clone().acquire_owned().await else {
                    return;
                };
                queue.progressed();
                let conn = conn.clone();
                tokio::spawn(async move {
                    send_bulk(conn, req, payload).await;
                    drop(permit);
                });
            } else if let Err(e) = frame::encode(&msg, &mut buf) {
                tracing::error!(peer = %conn.remote_address(), "dropping a message: {e}");
            }
            if buf.len() < MAX_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = send.write_all(&buf).await {
            tracing::debug!(peer = %conn.remote_address(), "write failed: {e}");
            return;
        }
        queue.progressed();
        if buf.capacity() > 4 * MAX_BATCH_BYTES {
            buf = Vec::with_capacity(64 * 1024);
        }
    }
    let _ = send.finish();
}

/// Writes one bulk payload on a unidirectional stream of its own: the
/// request number and length (u64, little-endian), then the bytes, under
/// the stream's flow control.
async fn send_bulk(conn: quinn::Connection, req: u64, payload: Payload) {
    let len = payload.as_slice().len();
    let mut header = [0u8; BULK_HEADER];
    header[..8].copy_from_slice(&req.to_le_bytes());
    header[8..].copy_from_slice(&(len as u64).to_le_bytes());
    let sent = async {
        let mut send = conn.open_uni().await?;
        send.write_all(&header).await?;
        // Handed to quinn by reference: its send buffer holds slices of
        // the payload, not a copy.
        if let Some(shared) = payload.into_shared() {
            send.write_chunk(bytes::Bytes::from_owner(Shared(shared)))
                .await?;
        }
        send.finish()?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    if let Err(e) = sent.await {
        tracing::debug!(peer = %conn.remote_address(), "bulk {req} not sent: {e}");
    }
}

/// Shared bytes as the owner of a [`bytes::Bytes`].
struct Shared(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

/// Accepts the peer's bulk streams and hands each payload to the inbox as
/// a [`Message::Bulk`]. A stream announcing more than `max_bulk` bytes, or
/// ending early, is a bad frame: the connection closes.
async fn bulk_loop(
    conn: quinn::Connection,
    inbox: mpsc::Sender<Result<Message, NetError>>,
    max_bulk: u64,
) {
    while let Ok(recv) = conn.accept_uni().await {
        let conn = conn.clone();
        let inbox = inbox.clone();
        tokio::spawn(async move {
            match read_bulk(recv, max_bulk).await {
                Ok(msg) => {
                    let _ = inbox.send(Ok(msg)).await;
                }
                Err(source) => {
                    if conn.close_reason().is_some() {
                        return; // the connection's end is reported by its reader
                    }
                    let peer = conn.remote_address();
                    tracing::warn!(%peer, "closing connection: bad bulk stream: {source}");
                    conn.close(VarInt::from_u32(CLOSE_BAD_FRAME), b"bad bulk stream");
                    let _ = inbox.send(Err(NetError::Frame { peer, source })).await;
                }
            }
        });
    }
}

async fn read_bulk(mut recv: RecvStream, max_bulk: u64) -> Result<Message, frame::FrameError> {
    use frame::FrameError;
    let mut header = [0u8; BULK_HEADER];
    recv.read_exact(&mut header)
        .await
        .map_err(|e| FrameError::Io(crate::Cause::new(e)))?;
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&header[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let (req, len) = (word(0), word(8));
    if len > max_bulk {
        return Err(FrameError::TooLarge {
            len: usize::try_from(len).unwrap_or(usize::MAX),
            max: usize::try_from(max_bulk).unwrap_or(usize::MAX),
        });
    }
    let len = usize::try_from(len)
        .map_err(|_| FrameError::Malformed(crate::Cause::msg("bulk too long")))?;
    // Reserved whole, so the bytes are copied once: a buffer kept from an
    // earlier payload (`buffers`: already backed by memory, which a stalled
    // stream holds), or a new reservation, which is address space only
    // (pages are backed as the bytes arrive); one that cannot be reserved
    // is refused, not an abort.
    let mut data = crate::buffers::take(len).ok_or_else(|| {
        FrameError::Malformed(crate::Cause::msg(format!(
            "bulk of {len} bytes: cannot reserve that much memory"
        )))
    })?;
    while data.len() < len {
        let want = len - data.len();
        match recv.read_chunk(want, true).await {
            Ok(Some(chunk)) => data.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(FrameError::Truncated),
            Err(e) => return Err(FrameError::Io(crate::Cause::new(e))),
        }
    }
    Ok(Message::Bulk {
        req,
        payload: Payload::new(crate::buffers::Reused::new(data)),
    })
}

async fn read_loop(
    recv: RecvStream,
    conn: quinn::Connection,
    inbox: mpsc::Sender<Result<Message, NetError>>,
    max_frame: usize,
) {
    let peer = conn.remote_address();
    let mut reader = FrameReader::new(BufReader::with_capacity(64 * 1024, recv), max_frame);
    loop {
        match reader.next().await {
            Ok(Some(msg)) => {
                if inbox.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(source) => {
                // A lost connection shows up as a read error: report why the
                // connection ended rather than the symptom.
                let err = match conn.close_reason() {
                    Some(reason) if closed_normally(&reason) => return,
                    Some(reason) => classify(peer, &reason),
                    None => {
                        tracing::warn!(%peer, "closing connection: bad frame: {source}");
                        conn.close(VarInt::from_u32(CLOSE_BAD_FRAME), b"bad frame");
                        NetError::Frame { peer, source }
                    }
                };
                let _ = inbox.send(Err(err)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the failure report

    use std::time::Duration;

    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A server endpoint, its address, and a client endpoint of the same
    /// cluster, on loopback with default options (inside a runtime).
    fn loopback_pair() -> (Endpoint, SocketAddr, Endpoint) {
        let credential = ClusterCredential::generate().unwrap();
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = Endpoint::bind(lo, &credential, EndpointOptions::default()).unwrap();
        let addr = server.local_addr().unwrap();
        let client = Endpoint::bind(lo, &credential, EndpointOptions::default()).unwrap();
        (server, addr, client)
    }

    #[test]
    fn a_peer_that_does_not_read_is_cut_off_at_the_queue_bound() {
        rt().block_on(async {
            let (server, addr, client) = loopback_pair();
            let acceptor = server.clone();
            let accepted =
                tokio::spawn(async move { acceptor.accept().await?.establish().await.ok() });
            // The client speaks once, then never reads its stream.
            let (_conn, mut send, _unread) = client.connect_raw(addr).await.unwrap();
            let mut hello = Vec::new();
            frame::encode(&Message::Subscribe, &mut hello).unwrap();
            send.write_all(&hello).await.unwrap();
            let (to_client, _inbox) = accepted.await.unwrap().unwrap();
            let reply = |req| Message::Fetched {
                req,
                result: Ok(vec![7; 16 << 10]),
            };
            // Past the bound at once: still queued, the writer is young.
            let mut sent = 0u64;
            while (sent as usize) * (16 << 10) < 2 * MAX_QUEUED_BYTES {
                to_client.send(reply(sent)).expect("a burst is queued");
                sent += 1;
            }
            // Then the writer stalls on a peer that reads nothing: once it
            // has written nothing for STALL, the next send is refused and
            // the connection closed.
            let start = std::time::Instant::now();
            let refused = loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Err(e) = to_client.send(reply(sent)) {
                    break e;
                }
                sent += 1;
                assert!(start.elapsed() < STALL * 4, "never cut off");
            };
            assert!(refused.to_string().contains("does not read"), "{refused}");
            assert!(start.elapsed() >= STALL / 2, "cut off only after a stall");
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!to_client.is_open(), "the connection is closed");
        });
    }

    #[test]
    fn an_unvalidated_address_gets_a_retry_before_its_handshake() {
        rt().block_on(async {
            let (server, addr, client) = loopback_pair();
            assert_eq!(server.retries_sent(), 0);
            let acceptor = server.clone();
            let accepted =
                tokio::spawn(async move { acceptor.accept().await?.establish().await.ok() });
            let (link, _inbox) =
                tokio::time::timeout(Duration::from_secs(10), client.connect(addr))
                    .await
                    .expect("connected in time")
                    .unwrap();
            link.send(Message::Subscribe).unwrap();
            assert!(accepted.await.unwrap().is_some(), "the handshake went on");
            // One Retry for the one attempt, answered with its token: the
            // handshake that followed was the validated one.
            assert_eq!(server.retries_sent(), 1);
            assert_eq!(client.retries_sent(), 0, "a client sends none");
        });
    }

    #[test]
    fn connections_past_the_cap_are_refused_until_one_closes() {
        rt().block_on(async {
            let credential = ClusterCredential::generate().unwrap();
            let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let options = EndpointOptions {
                max_connections: 2,
                ..EndpointOptions::default()
            };
            let server = Endpoint::bind(lo, &credential, options).unwrap();
            let addr = server.local_addr().unwrap();
            let client = Endpoint::bind(lo, &credential, EndpointOptions::default()).unwrap();
            let acceptor = server.clone();
            let (tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Some(incoming) = acceptor.accept().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        if let Ok(pair) = incoming.establish().await {
                            let _ = tx.send(pair);
                        }
                    });
                }
            });
            let open = |client: Endpoint| async move {
                let (link, inbox) = client.connect(addr).await?;
                link.send(Message::Subscribe)?;
                Ok::<_, NetError>((link, inbox))
            };
            let limit = Duration::from_secs(5);
            let mut held = Vec::new();
            for _ in 0..2 {
                held.push(open(client.clone()).await.unwrap());
                held.push(
                    tokio::time::timeout(limit, accepted.recv())
                        .await
                        .unwrap()
                        .unwrap(),
                );
            }
            // A third while two are open: refused.
            let third = tokio::time::timeout(limit, open(client.clone())).await;
            assert!(matches!(third, Ok(Err(_))), "refused: {third:?}");
            // One closes: the next is accepted.
            let (first, _) = held.remove(0);
            first.close("done");
            held.remove(0);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let fourth = tokio::time::timeout(limit, open(client.clone())).await;
            assert!(
                matches!(fourth, Ok(Ok(_))),
                "accepted once one closed: {fourth:?}"
            );
        });
    }

    #[test]
    fn attempts_past_the_handshake_cap_are_refused_and_a_freed_slot_is_reused() {
        rt().block_on(async {
            let credential = ClusterCredential::generate().unwrap();
            let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let options = EndpointOptions {
                max_handshakes: 1,
                ..EndpointOptions::default()
            };
            let server = Endpoint::bind(lo, &credential, options).unwrap();
            let addr = server.local_addr().unwrap();
            let client = Endpoint::bind(lo, &credential, EndpointOptions::default()).unwrap();

            // The first attempt takes the only slot and is held, unanswered.
            let first_client = client.clone();
            let first = tokio::spawn(async move { first_client.connect(addr).await });
            let held = tokio::time::timeout(Duration::from_secs(5), server.accept())
                .await
                .expect("the first attempt reaches accept")
                .unwrap();

            // A second one meanwhile is refused inside `accept`.
            let acceptor = server.clone();
            let next = tokio::spawn(async move { acceptor.accept().await });
            let second = tokio::time::timeout(Duration::from_secs(5), client.connect(addr)).await;
            assert!(
                matches!(second, Ok(Err(_))),
                "refused, not accepted or left hanging: {second:?}"
            );

            // Finishing the first handshake frees the slot for the next
            // (the server's side completes once the client speaks).
            let established = tokio::spawn(held.establish());
            let (first_link, _first_inbox) = first.await.unwrap().unwrap();
            first_link.send(Message::Subscribe).unwrap();
            let (_held_link, _held_inbox) = established.await.unwrap().unwrap();
            let third_client = client.clone();
            let third = tokio::spawn(async move {
                let (link, inbox) = third_client.connect(addr).await?;
                link.send(Message::Subscribe)?;
                Ok::<_, NetError>((link, inbox))
            });
            let incoming = tokio::time::timeout(Duration::from_secs(5), next)
                .await
                .expect("a later attempt is accepted")
                .unwrap()
                .unwrap();
            let established = tokio::time::timeout(Duration::from_secs(5), incoming.establish())
                .await
                .expect("the later handshake completes");
            assert!(established.is_ok(), "{established:?}");
            assert!(third.await.unwrap().is_ok());
        });
    }

    #[test]
    fn bulk_data_moves_in_the_largest_datagrams_the_path_allows() {
        rt().block_on(async {
            let (server, addr, client) = loopback_pair();
            let acceptor = server.clone();
            let accepted =
                tokio::spawn(async move { acceptor.accept().await?.establish().await.ok() });
            let (link, _inbox) = client.connect(addr).await.unwrap();
            link.send(Message::Subscribe).unwrap();
            let (_server_link, mut inbox) = accepted.await.unwrap().unwrap();
            assert!(matches!(inbox.recv().await, Some(Ok(Message::Subscribe))));
            // MTU discovery runs while the connection is idle.
            let limit = std::time::Instant::now() + Duration::from_secs(10);
            while link.path_stats().datagram_size < MAX_DATAGRAM {
                assert!(
                    std::time::Instant::now() < limit,
                    "MTU discovery never ended"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let before = link.conn.stats().path;
            const LEN: usize = 32 << 20;
            let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
            let data = Arc::new(data);
            for req in 0..2 {
                link.send(Message::Bulk {
                    req,
                    payload: Payload::new(data.clone()),
                })
                .unwrap();
            }
            for _ in 0..2 {
                let got = tokio::time::timeout(Duration::from_secs(60), inbox.recv())
                    .await
                    .expect("the bulk arrived in time")
                    .unwrap()
                    .unwrap();
                let Message::Bulk { payload, .. } = got else {
                    panic!("not a bulk: {got:?}");
                };
                assert!(payload.as_slice() == data.as_slice(), "the bytes differ");
            }
            let after = link.conn.stats().path;
            // Each send hands the kernel up to ten datagrams at once, so
            // larger ones would exceed the largest UDP send, be lost, and
            // drop the path back to 1,200 bytes.
            assert_eq!(after.black_holes_detected, 0, "{after:?}");
            assert_eq!(after.current_mtu, MAX_DATAGRAM, "{after:?}");
            let datagrams = after.sent_packets - before.sent_packets;
            let floor = 2 * LEN as u64 / u64::from(MAX_DATAGRAM);
            assert!(
                datagrams < floor * 3 / 2,
                "{datagrams} datagrams for {} bytes: small ones",
                2 * LEN
            );
        });
    }
}
