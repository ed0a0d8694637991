//! Replays every input kept under `fuzz/corpus/` (seeds made from real
//! messages, and what `cargo fuzz` found and kept) through the same code
//! the fuzz targets run, on stable Rust: a decoder that panics, aborts or
//! over-allocates on any of them fails here, in CI.
//!
//! `DFUT_FUZZ_SEEDS=1 cargo test -p dfut-tests --test fuzz_corpus` writes
//! the seed inputs (`dfut_fuzz::seeds`) into the corpus first.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod bodies;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn replay(target: &str, run: fn(&[u8])) {
    if std::env::var_os("DFUT_FUZZ_SEEDS").is_some() {
        for (t, name, bytes) in bodies::seeds() {
            let dir = corpus(t);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }
    let dir = corpus(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .collect();
    inputs.sort();
    let seeds = inputs
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        })
        .count();
    assert!(seeds > 0, "{}: no seed inputs", dir.display());
    // `DFUT_FUZZ_ONLY=name` replays the inputs whose name contains it.
    let only = std::env::var("DFUT_FUZZ_ONLY").unwrap_or_default();
    for input in inputs
        .iter()
        .filter(|p| p.to_string_lossy().contains(&only))
    {
        let bytes = std::fs::read(input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{} failed", input.display());
    }
    eprintln!("{target}: {} inputs replayed", inputs.len());
}

#[test]
fn frame_corpus_replays() {
    replay("frame", bodies::frame);
}

#[test]
fn message_corpus_replays() {
    replay("message", bodies::message);
}

#[test]
fn args_corpus_replays() {
    replay("args", bodies::args);
}

#[test]
fn the_seeds_decode_to_what_was_sent() {
    // dfut's own functions are all there to be called.
    let names: Vec<&str> = bodies::internal_functions()
        .iter()
        .map(|f| f.name)
        .collect();
    for f in ["cut", "multiply", "sum", "assemble", "keep"] {
        assert!(
            names.contains(&format!("dfut::matrix::tiled::{f}").as_str()),
            "{f} in {names:?}"
        );
    }
    // The seeds are real messages and values: each decodes (the bodies
    // check the round trip), so the fuzzer starts from the formats' hearts.
    for (target, name, bytes) in bodies::seeds() {
        match target {
            "message" => assert!(
                dfut_net::frame::decode(&bytes).is_ok(),
                "message seed {name}"
            ),
            "args" => {
                let kind = bytes[0] % bodies::ARG_TYPES;
                let args: dfut::__private::Args = vec![dfut::__private::ArgBytes::One(
                    std::sync::Arc::new(dfut::__private::Bytes::from(bytes[1..].to_vec())),
                )];
                let decoded = match kind {
                    7 => dfut::__private::arg::<dfut::matrix::Matrix>(&args, 0).is_ok(),
                    8 => dfut::__private::arg_archived::<dfut::matrix::Matrix>(&args, 0).is_ok(),
                    _ => true,
                };
                assert!(decoded, "args seed {name}");
            }
            _ => {}
        }
    }
}
