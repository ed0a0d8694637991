//! What the fuzz targets run, and the seed inputs they start from.
//!
//! Each target feeds one input to one decoder a peer can reach: the frame
//! reader ([`frame`]), message decoding ([`message`]) and argument decoding
//! ([`args`]). None of them may panic, abort or allocate beyond what the
//! input justifies, whatever the bytes. The fuzz targets (`fuzz_targets/`,
//! run with `cargo fuzz`) call these functions; so does an ordinary test of
//! the workspace (`tests/fuzz_corpus.rs`), which replays every input kept
//! under `corpus/` on stable Rust, so CI covers what fuzzing found.
//! [`seeds`] makes the starting corpus from real messages and values.

use std::sync::Arc;

use dfut::__private::{ArgBytes, Bytes};
use dfut::Data;
use dfut::matrix::Matrix;
use dfut_net::frame::{FrameReader, decode, encode};
use dfut_net::wire::{
    Arg, ClusterStatus, Failure, FailureKind, FunctionMetrics, Item, LogLine, Message, ObjectId,
    ObjectListing, ObjectState, Outcome, ResourceAmount, ResourceRequest, Role, TaskListing,
    TaskSpec, TaskState, WorkerInfo, WorkerLoad, WorkerState,
};

/// The frame limit the reader is given: small, so the limit is exercised.
pub const MAX_FRAME: usize = 1 << 20;

/// Reads frames from `data` as a worker reads a connection, until the
/// stream ends or a frame is refused. Every message read re-encodes to a
/// frame that decodes to the same message.
pub fn frame(data: &[u8]) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    rt.block_on(async {
        let mut reader = FrameReader::new(data, MAX_FRAME);
        while let Ok(Some(msg)) = reader.next().await {
            round_trip(&msg);
        }
    });
}

/// Decodes `data` as one frame body; a message decoded survives a round
/// trip.
pub fn message(data: &[u8]) {
    if let Ok(msg) = decode(data) {
        round_trip(&msg);
    }
}

/// A message decoded encodes to a frame that decodes to a message that
/// encodes to the same bytes. (Bytes, not values, are compared: a NaN in
/// a float field is not equal to itself.)
fn round_trip(msg: &Message) {
    let mut first = Vec::new();
    if encode(msg, &mut first).is_ok() {
        let again = decode(&first[dfut_net::frame::HEADER_LEN..]);
        let Ok(again) = again else {
            panic!("a message encoded does not decode: {again:?}");
        };
        let mut second = Vec::new();
        assert!(encode(&again, &mut second).is_ok());
        assert_eq!(first, second, "a message survives a round trip");
    }
}

/// The argument types [`args`] decodes, chosen by the input's first byte;
/// the last choice calls one of dfut's own remote functions instead
/// ([`internal`]).
pub const ARG_TYPES: u8 = 10;

/// Decodes `data[1..]` as an argument of the type `data[0]` names, as a
/// worker decodes a task's arguments (through the code `#[dfut::remote]`
/// generates), and uses the value: a `Matrix`, or an `Archived<Matrix>`
/// read in place, goes through the operations tasks use on it.
pub fn args(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let args: dfut::__private::Args = vec![ArgBytes::One(Arc::new(Bytes::from(rest.to_vec())))];
    match kind % ARG_TYPES {
        0 => check::<u64>(&args),
        1 => check::<i32>(&args),
        2 => check::<String>(&args),
        3 => check::<Vec<u64>>(&args),
        4 => check::<Vec<String>>(&args),
        5 => check::<(u32, String, Vec<f32>)>(&args),
        6 => check::<Option<Vec<(u64, u64)>>>(&args),
        9 => internal(rest),
        7 => {
            if let Ok(m) = dfut::__private::arg::<Matrix>(&args, 0) {
                use_matrix(&m);
                round_trip_value(m);
            }
        }
        _ => {
            if let Ok(m) = dfut::__private::arg_archived::<Matrix>(&args, 0) {
                use_matrix(&m.view());
            }
        }
    }
}

/// The remote functions dfut registers for itself (the tiled matrix
/// product's tasks), sorted by name.
pub fn internal_functions() -> Vec<&'static dfut::__private::RemoteFn> {
    let mut fns: Vec<_> = dfut::__private::inventory::iter::<dfut::__private::RemoteFn>
        .into_iter()
        .filter(|f| f.name.starts_with("dfut::"))
        .collect();
    fns.sort_by_key(|f| f.name);
    fns
}

/// Calls one of dfut's own remote functions as a worker would for a peer:
/// `data[0]` picks it, the rest is its arguments, each a one-byte count
/// (0 for a single value, else the elements of a list) and then, per
/// value, a two-byte little-endian length and that many bytes. It must
/// answer or fail with an error, never panic or over-allocate.
pub fn internal(data: &[u8]) {
    let fns = internal_functions();
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let Some(f) = fns.get(pick as usize % fns.len().max(1)) else {
        return;
    };
    let value = |rest: &mut &[u8]| -> Option<Arc<Bytes>> {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        *rest = tail;
        Some(Arc::new(Bytes::from(bytes.to_vec())))
    };
    let mut args = Vec::new();
    while let Some((&count, tail)) = rest.split_first() {
        rest = tail;
        if count == 0 {
            match value(&mut rest) {
                Some(v) => args.push(ArgBytes::One(v)),
                None => break,
            }
        } else {
            let items: Vec<_> = (0..count).map_while(|_| value(&mut rest)).collect();
            args.push(ArgBytes::Many(items));
        }
    }
    if let dfut::__private::Invoke::Sync(call) = f.invoke {
        let _ = call(args);
    }
}

/// Decodes the one argument as a `T`; a value decoded survives a round
/// trip.
fn check<T: Data>(args: &dfut::__private::Args) {
    if let Ok(v) = dfut::__private::arg::<T>(args, 0) {
        round_trip_value(v);
    }
}

/// A value encodes to bytes that decode to a value that encodes to the
/// same bytes (bytes compared, for the NaN floats may hold).
fn round_trip_value<T: Data>(v: T) {
    let Ok(first) = v.encode() else {
        return;
    };
    let again = T::decode(&first);
    let Ok(again) = again else {
        panic!("a value encoded does not decode");
    };
    assert_eq!(
        again.encode().ok(),
        Some(first),
        "a value survives a round trip"
    );
}

/// What tasks do with a matrix they were sent: each operation either
/// answers or says why not, and never allocates more than the inputs and
/// the matrix limit justify.
fn use_matrix(m: &impl dfut::matrix::AsMatrixRef) {
    let v = m.as_matrix_ref();
    let (rows, cols) = v.shape();
    assert_eq!(rows.checked_mul(cols), Some(v.as_slice().len()));
    let backend = dfut::matrix::Backend::Cpu;
    let _ = backend.matmul(&v, &v);
    // The transpose-shaped product: `m` times a `cols x rows` matrix made
    // of the same elements, the outer product for a single column.
    if let Ok(t) = Matrix::new(cols, rows, v.as_slice().to_vec()) {
        let _ = backend.matmul(&v, &t);
        let _ = backend.matmul(&t, &v);
    }
    let _ = backend.add(&v, &v);
    let _ = v.block(rows / 2, cols / 2, rows - rows / 2, cols - cols / 2);
    let _ = v.block(1, 1, rows, cols);
    let _ = v.to_matrix().transpose();
}

/// The seed inputs of each target (`frame`, `message`, `args`), made from
/// the messages and values dfut sends: `(target, name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let messages = messages();
    let mut stream = Vec::new();
    for (i, msg) in messages.iter().enumerate() {
        let mut frame = Vec::new();
        if encode(msg, &mut frame).is_ok() {
            stream.extend_from_slice(&frame);
            out.push((
                "message",
                format!("seed-{i:02}"),
                frame[dfut_net::frame::HEADER_LEN..].to_vec(),
            ));
            out.push(("frame", format!("seed-{i:02}"), frame));
        }
    }
    out.push(("frame", "seed-all".into(), stream));
    let mut values: Vec<(u8, Vec<u8>)> = vec![
        (0, 42u64.encode().unwrap_or_default()),
        (1, (-7i32).encode().unwrap_or_default()),
        (
            2,
            "pipe, pipe2 - create pipe"
                .to_owned()
                .encode()
                .unwrap_or_default(),
        ),
        (
            3,
            (0..100u64).collect::<Vec<_>>().encode().unwrap_or_default(),
        ),
        (
            4,
            vec!["a".to_owned(), "bc".into(), String::new()]
                .encode()
                .unwrap_or_default(),
        ),
        (
            5,
            (3u32, "x".to_owned(), vec![1.5f32, -2.0])
                .encode()
                .unwrap_or_default(),
        ),
        (
            6,
            Some(vec![(1u64, 2u64), (3, 4)])
                .encode()
                .unwrap_or_default(),
        ),
    ];
    for (rows, cols) in [(3, 3), (1, 4), (4, 1), (0, 5), (2, 0)] {
        let m = Matrix::from_fn(rows, cols, |r, c| (r * 10 + c) as f32);
        let bytes = m.encode().unwrap_or_default();
        values.push((7, bytes.clone()));
        values.push((8, bytes));
    }
    values.extend(internal_seeds().into_iter().map(|b| (9, b)));
    for (i, (kind, bytes)) in values.into_iter().enumerate() {
        let mut input = vec![kind];
        input.extend_from_slice(&bytes);
        out.push(("args", format!("seed-{i:02}"), input));
    }
    out.extend(regressions());
    out
}

/// What fuzzing found, remade (each named `found-…`): kept so the
/// replay test guards every fix.
fn regressions() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let arg = |kind: u8, m: &Matrix| {
        let mut input = vec![kind];
        input.extend_from_slice(&m.encode().unwrap_or_default());
        input
    };
    // A NaN is not equal to itself: round trips compare bytes, not values.
    let nan = Matrix::from_fn(2, 2, |_, _| f32::NAN);
    out.push(("args", "found-nan-round-trip".into(), arg(7, &nan)));
    let mut info = WorkerInfo::default();
    info.speed = f32::NAN;
    let mut frame = Vec::new();
    if encode(&Message::Register(info), &mut frame).is_ok() {
        out.push((
            "message",
            "found-nan-round-trip".into(),
            frame[dfut_net::frame::HEADER_LEN..].to_vec(),
        ));
        out.push(("frame", "found-nan-round-trip".into(), frame));
    }
    // Matrices of no elements whose product is large: m x 0 times 0 x m
    // made an m x m result from no data (the limit is MAX_ELEMENTS).
    for (name, rows) in [
        ("found-oom-empty-product", 35_466),
        ("found-oom-empty-2560", 2_560),
    ] {
        if let Ok(m) = Matrix::new(rows, 0, Vec::new()) {
            out.push(("args", name.into(), arg(7, &m)));
        }
    }
    // Billions of empty rows: cutting a block or transposing walked them.
    if let Ok(m) = Matrix::new(u32::MAX as usize, 0, Vec::new()) {
        out.push(("args", "found-timeout-empty-rows".into(), arg(7, &m)));
        out.push((
            "args",
            "found-timeout-empty-rows-in-place".into(),
            arg(8, &m),
        ));
    }
    out
}

/// Calls of each of dfut's own functions with arguments a tiled product
/// sends: `[function][args]` in [`internal`]'s layout.
fn internal_seeds() -> Vec<Vec<u8>> {
    let value = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    let one = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.push(0);
        value(out, bytes);
    };
    let tile = |r, c| {
        Matrix::from_fn(r, c, |i, j| (i + j) as f32)
            .encode()
            .unwrap_or_default()
    };
    let mut seeds = Vec::new();
    for (pick, f) in internal_functions().iter().enumerate() {
        let mut s = vec![pick as u8];
        match f.name.rsplit("::").next().unwrap_or_default() {
            "cut" => {
                one(&mut s, &tile(4, 4));
                for n in [0u32, 2, 2, 2] {
                    one(&mut s, &n.encode().unwrap_or_default());
                }
            }
            "multiply" => {
                one(&mut s, &tile(2, 3));
                one(&mut s, &tile(3, 2));
            }
            "sum" => {
                s.push(2);
                value(&mut s, &tile(2, 2));
                value(&mut s, &tile(2, 2));
            }
            "assemble" => {
                s.push(4);
                for _ in 0..4 {
                    value(&mut s, &tile(2, 2));
                }
                one(&mut s, &vec![2u32, 2].encode().unwrap_or_default());
                one(&mut s, &vec![2u32, 2].encode().unwrap_or_default());
            }
            _ => one(&mut s, &tile(3, 3)),
        }
        seeds.push(s);
    }
    seeds
}

/// One of each message dfut sends, with the contents of a real run.
fn messages() -> Vec<Message> {
    let id = ObjectId {
        owner: 0x1234_5678,
        seq: 17,
    };
    let mut info = WorkerInfo::default();
    info.id = 77;
    info.addr = "127.0.0.1:40001".into();
    info.max_concurrent = 2;
    info.pid = 4242;
    info.host = "host-a".into();
    info.gpus = 1;
    info.memory_mb = 8192;
    info.resources = vec![ResourceAmount {
        name: "disk".into(),
        amount: 2,
    }];
    let mut load = WorkerLoad::default();
    load.running = 2;
    load.queued = 5;
    load.objects = 3;
    load.object_bytes = 1 << 20;
    let failure = Failure {
        kind: FailureKind::Panicked,
        message: "index out of bounds".into(),
        location: "src/lib.rs:10:5".into(),
        causes: vec!["inner".into()],
        backtrace: String::new(),
    };
    let task = TaskSpec {
        id,
        function: "dfut_tests::add".into(),
        signature: 0x0bad_cafe,
        args: vec![
            Arg::Value(1u64.encode().unwrap_or_default()),
            Arg::Ref {
                id: ObjectId { owner: 1, seq: 2 },
                holder: "127.0.0.1:40002".into(),
            },
            Arg::List(vec![
                Item::Value(vec![1, 0, 0, 0, 0, 0, 0, 0]),
                Item::Ref {
                    id,
                    holder: "127.0.0.1:40003".into(),
                },
            ]),
            Arg::Pushed {
                req: 9,
                len: 1 << 20,
            },
            Arg::Shared {
                path: "/dev/shm/dfut-1/1-17-0".into(),
                len: 4096,
            },
        ],
        inline_max: 65536,
        timeout_ms: 500,
        confirm_start: true,
        low_priority: true,
        submitted_us: 1_790_000_000_000_000,
        resources: ResourceRequest {
            cpus: 2,
            gpus: 1,
            memory_mb: 512,
            custom: vec![ResourceAmount {
                name: "disk".into(),
                amount: 1,
            }],
        },
    };
    vec![
        Message::Hello {
            node: 0x1234_5678,
            role: Role::Client,
            secret: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        },
        Message::Register(info.clone()),
        Message::Heartbeat(load.clone()),
        Message::Subscribe,
        Message::View {
            mode: "locality".into(),
            workers: vec![WorkerState::new(info.clone(), load.clone())],
            tick_ms: 250,
        },
        Message::WorkerLost { id: 77 },
        Message::StatusRequest,
        Message::StatusReply(ClusterStatus::new(
            "default".into(),
            vec![WorkerState::new(info, load)],
        )),
        Message::Submit(vec![task]),
        Message::Started(id),
        Message::Done {
            id,
            outcome: Outcome::Inline(7u64.encode().unwrap_or_default()),
            running: 1,
            queued: 0,
            exec_us: 12,
        },
        Message::Done {
            id,
            outcome: Outcome::Failed(failure.clone()),
            running: 0,
            queued: 0,
            exec_us: 40,
        },
        Message::Fetch {
            req: 3,
            id,
            host: "host-a".into(),
        },
        Message::FetchedShared {
            req: 3,
            path: "/dev/shm/dfut-1/1-17-0".into(),
            len: 4096,
        },
        Message::Fetched {
            req: 4,
            result: Ok(vec![1, 2, 3, 4]),
        },
        Message::Fetched {
            req: 5,
            result: Err(failure),
        },
        Message::Free(vec![id, ObjectId { owner: 1, seq: 2 }]),
        Message::Goodbye,
        Message::Blocked(id),
        Message::Resumed(id),
        Message::HeartbeatAck,
        Message::RegisterAgain,
        Message::Confirmed(id),
        Message::Cancel(vec![id]),
        Message::ObjectsRequest { req: 6, limit: 20 },
        Message::ObjectsReply {
            req: 6,
            objects: vec![ObjectListing::new(
                id,
                ObjectState::Heap,
                "127.0.0.1:40001".into(),
            )],
        },
        Message::RefQuery {
            req: 7,
            ids: vec![id],
        },
        Message::RefReply {
            req: 7,
            refs: vec![(2, "dfut_tests::add".into())],
        },
        Message::WantLogs,
        Message::Logs {
            pid: 4242,
            lines: vec![LogLine {
                stderr: true,
                text: "[task 1:2 m::f] WARN m: hello".into(),
            }],
            dropped: 3,
        },
        Message::MetricsRequest { req: 9 },
        Message::MetricsReply {
            req: 9,
            functions: vec![FunctionMetrics::new("dfut_tests::add".into())],
        },
        Message::TasksRequest {
            req: 8,
            limit: 100,
            state: Some(TaskState::Failed),
        },
        Message::TasksReply {
            req: 8,
            tasks: vec![TaskListing::new(
                id,
                "dfut_tests::add".into(),
                TaskState::Failed,
            )],
            fetches: Vec::new(),
        },
    ]
}
