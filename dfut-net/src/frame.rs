//! Length-prefixed frames carrying validated rkyv archives.
//!
//! A frame is a 4-byte little-endian length followed by that many bytes of an
//! archived [`Message`]. [`encode`] appends frames to a buffer so that many
//! messages leave in one write; [`FrameReader`] reads them back into aligned
//! buffers and validates each before use. A length above the reader's limit,
//! a stream that ends inside a frame, or bytes that are not a valid archive
//! are all [`FrameError`]s. This module does no I/O beyond the stream handed
//! to it.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::Cause;
use crate::wire::{ArchivedMessage, Message};

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;
/// The default largest frame accepted: 1 GiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// What was wrong with a frame.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more bytes than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The bytes are not a valid archived message.
    #[error("malformed message: {0}")]
    Malformed(#[source] Cause),
    /// Reading the stream failed.
    #[error("read failed: {0}")]
    Io(#[source] Cause),
}

/// Appends `msg` to `out` as one frame.
///
/// ```
/// use dfut_net::frame::{encode, decode};
/// use dfut_net::wire::Message;
///
/// let mut out = Vec::new();
/// encode(&Message::Subscribe, &mut out)?;
/// assert_eq!(decode(&out[4..]).unwrap(), Message::Subscribe);
/// # Ok::<(), dfut_net::NetError>(())
/// ```
pub fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), crate::NetError> {
    let bytes = rkyv::to_bytes::<rancor::BoxedError>(msg)
        .map_err(|e| crate::NetError::Encode(Cause::new(e)))?;
    let len = u32::try_from(bytes.len()).map_err(|_| {
        crate::NetError::Encode(Cause::msg(format!("message of {} bytes", bytes.len())))
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Validates and decodes one frame body (the bytes after the length prefix).
///
/// The bytes are copied into an aligned buffer first; use [`FrameReader`]
/// on a stream to avoid the copy.
pub fn decode(body: &[u8]) -> Result<Message, FrameError> {
    let mut aligned = AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    decode_aligned(&aligned)
}

fn decode_aligned(body: &AlignedVec<16>) -> Result<Message, FrameError> {
    let archived = rkyv::access::<ArchivedMessage, rancor::BoxedError>(body)
        .map_err(|e| FrameError::Malformed(Cause::new(e)))?;
    rkyv::deserialize::<Message, rancor::BoxedError>(archived)
        .map_err(|e| FrameError::Malformed(Cause::new(e)))
}

/// Reads frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    max: usize,
    buf: AlignedVec<16>,
}

/// How far ahead of the bytes received a frame's buffer may grow at
/// first: a peer that announces a large frame and stalls pins this much,
/// whatever it announced (then the buffer doubles as bytes arrive).
const READ_CHUNK: usize = 4 << 10;

/// The largest buffer a reader keeps between frames (room for a frame
/// carrying a 64 KiB inline value): what an idle connection pins at most.
const KEPT_BUFFER: usize = 128 << 10;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from `inner`, refusing frames longer than `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            max,
            buf: AlignedVec::new(),
        }
    }

    /// The next message; `Ok(None)` when the stream ends cleanly between
    /// frames.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use dfut_net::frame::{encode, FrameError, FrameReader};
    /// use dfut_net::wire::Message;
    ///
    /// let mut bytes = Vec::new();
    /// encode(&Message::Goodbye, &mut bytes).unwrap();
    /// let mut reader = FrameReader::new(&bytes[..], 1024);
    /// assert_eq!(reader.next().await, Ok(Some(Message::Goodbye)));
    /// assert_eq!(reader.next().await, Ok(None));
    ///
    /// let garbage = [200u8, 0, 0, 0, 1, 2, 3];
    /// let mut reader = FrameReader::new(&garbage[..], 100);
    /// assert_eq!(reader.next().await, Err(FrameError::TooLarge { len: 200, max: 100 }));
    /// # });
    /// ```
    pub async fn next(&mut self) -> Result<Option<Message>, FrameError> {
        let mut header = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            let n = self
                .inner
                .read(&mut header[got..])
                .await
                .map_err(|e| FrameError::Io(Cause::new(e)))?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
            got += n;
        }
        let len = u32::from_le_bytes(header) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        // Grown as the bytes arrive: a peer that announces a large frame
        // and then stalls pins a chunk, not the announced length.
        self.buf.clear();
        while self.buf.len() < len {
            let start = self.buf.len();
            // At most as much again as has arrived (and at least a chunk):
            // the buffer is never more than twice what the peer sent.
            let want = (len - start).min(start.max(READ_CHUNK));
            self.buf.resize(start + want, 0);
            self.inner
                .read_exact(&mut self.buf[start..])
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
                    _ => FrameError::Io(Cause::new(e)),
                })?;
        }
        let msg = decode_aligned(&self.buf)?;
        if self.buf.capacity() > KEPT_BUFFER {
            // Do not keep a large buffer alive for the small frames that
            // follow, nor on a connection that goes idle.
            self.buf = AlignedVec::new();
        }
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Arg, ObjectId, TaskSpec};

    async fn read_all(bytes: &[u8], max: usize) -> Vec<Result<Option<Message>, FrameError>> {
        let mut reader = FrameReader::new(bytes, max);
        let mut out = Vec::new();
        loop {
            let r = reader.next().await;
            let stop = !matches!(r, Ok(Some(_)));
            out.push(r);
            if stop {
                return out;
            }
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|rt| rt.block_on(f))
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    }

    fn task() -> Message {
        Message::Submit(vec![TaskSpec {
            low_priority: false,
            submitted_us: 1_700_000_000_000_000,
            resources: Default::default(),
            id: ObjectId { owner: 7, seq: 9 },
            function: "m::f".into(),
            signature: 0x5157,
            args: vec![
                Arg::Value(vec![1, 2, 3]),
                Arg::Ref {
                    id: ObjectId { owner: 1, seq: 2 },
                    holder: "127.0.0.1:5".into(),
                },
            ],
            inline_max: 100,
            timeout_ms: 0,
            confirm_start: false,
        }])
    }

    #[test]
    fn round_trips_several_frames() {
        let mut bytes = Vec::new();
        encode(&task(), &mut bytes).unwrap();
        encode(
            &Message::Free(vec![ObjectId { owner: 1, seq: 1 }]),
            &mut bytes,
        )
        .unwrap();
        let got = block_on(read_all(&bytes, 1 << 20));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Ok(Some(task())));
        assert!(matches!(got[1], Ok(Some(Message::Free(_)))));
        assert_eq!(got[2], Ok(None));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut bytes = Vec::new();
        encode(&task(), &mut bytes).unwrap();
        for cut in 1..bytes.len() {
            let got = block_on(read_all(&bytes[..cut], 1 << 20));
            assert_eq!(
                got.last(),
                Some(&Err(FrameError::Truncated)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let mut bytes = Vec::new();
        encode(&task(), &mut bytes).unwrap();
        let mut rejected = 0;
        for i in HEADER_LEN..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                if let Some(Err(_)) = block_on(read_all(&bad, 1 << 20)).first() {
                    rejected += 1;
                }
            }
        }
        assert!(rejected > 0, "some corruption must be detected");
    }

    #[test]
    fn oversized_frame_is_refused_before_reading_it() {
        let bytes = u32::MAX.to_le_bytes();
        let got = block_on(read_all(&bytes, 1024));
        assert_eq!(
            got,
            vec![Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: 1024
            })]
        );
    }

    #[test]
    fn an_announced_length_is_not_allocated_before_it_arrives() {
        // 512 MiB announced (under the limit), 10 bytes sent, then the end:
        // a few KiB pinned, not 512 MiB (nor a megabyte: thousands of
        // stalled peers must not add up).
        let mut bytes = (512u32 << 20).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[7; 10]);
        let mut reader = FrameReader::new(&bytes[..], 1 << 30);
        assert_eq!(block_on(reader.next()), Err(FrameError::Truncated));
        assert!(
            reader.buf.capacity() <= 2 * READ_CHUNK && READ_CHUNK <= 16 << 10,
            "buffer grew to {} bytes",
            reader.buf.capacity()
        );
        // A large frame that does arrive is read whole, its buffer grown
        // as it came.
        let big = Message::Fetched {
            req: 1,
            result: Ok(vec![9; 3 << 20]),
        };
        let mut framed = Vec::new();
        encode(&big, &mut framed).unwrap();
        let mut reader = FrameReader::new(&framed[..], 1 << 30);
        assert_eq!(block_on(reader.next()), Ok(Some(big)));
    }

    #[test]
    fn garbage_is_malformed() {
        let mut bytes = 8u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef]);
        let got = block_on(read_all(&bytes, 1024));
        assert!(matches!(got[0], Err(FrameError::Malformed(_))), "{got:?}");
    }
}
