//! Combinators, tree reduction, and map-reduce word count on real worker
//! processes, including a worker killed during the map phase.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use dfut::{Error, Status};
use dfut_benches::wordcount::{
    SYNTHETIC_SEED, count_file_chunk, count_synthetic, count_text, merge, merge_counts,
    plan_chunks, synthetic_chunk,
};
use dfut_tests::*;
use futures_util::StreamExt;

use crate::util::{LIMIT, cluster};

#[test]
fn join_all_keeps_order_and_each_input_its_own_result() {
    let rt = cluster(3);
    let _g = rt.enter();
    let inputs: Vec<_> = (0..10)
        .map(|i| {
            if i == 4 {
                even_only(7)
            } else {
                even_only(2 * i)
            }
        })
        .collect();
    let results = rt.block_on(dfut::join_all(inputs.clone()));
    for (i, r) in results.iter().enumerate() {
        if i == 4 {
            assert!(matches!(r, Err(Error::TaskFailed { message, .. }) if message == "7 is odd"));
        } else {
            assert_eq!(*r, Ok(2 * i as u64));
        }
    }
    assert_eq!(dfut::get_all(&inputs), results);
}

#[test]
fn wait_returns_the_first_k_and_respects_its_timeout() {
    let rt = cluster(3);
    let _g = rt.enter();
    let fs = vec![
        slow_echo(0, 2500),
        slow_echo(1, 0),
        slow_echo(2, 2500),
        slow_echo(3, 0),
    ];
    let (ready, pending) = dfut::wait(fs.clone(), 2, Some(LIMIT));
    assert_eq!(ready.len(), 2);
    assert_eq!(pending.len(), 2);
    let mut got: Vec<u64> = ready
        .iter()
        .map(|f| f.get_timeout(LIMIT).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, vec![1, 3]);
    // Asking for more than can finish in time: the timeout wins.
    let (ready, pending) = dfut::wait(fs.clone(), 4, Some(Duration::from_millis(100)));
    assert_eq!((ready.len(), pending.len()), (2, 2));
    assert!(pending.iter().all(|f| f.status() != Status::Finished));
    // Without a timeout it waits for all of them.
    let (ready, pending) = dfut::wait(fs.clone(), 4, None);
    assert_eq!((ready.len(), pending.len()), (4, 0));
    // Never more than `k` ready, as `ray.wait`: the first in input order.
    let (ready, rest) = dfut::wait(fs, 1, None);
    assert_eq!((ready.len(), rest.len()), (1, 3));
    assert_eq!(ready[0].get_timeout(LIMIT), Ok(0));
    assert!(rest.iter().all(|f| f.status() == Status::Finished));
}

#[test]
fn as_completed_yields_in_completion_order_with_failures_in_place() {
    let rt = cluster(3);
    let _g = rt.enter();
    // Wide margins: a panic prints its backtrace first (RUST_BACKTRACE=1
    // in CI), which can take a debug build a good part of a second.
    let fs = vec![
        slow_echo(0, 6000),
        explode("early".to_string()),
        slow_echo(2, 3000),
    ];
    let order: Vec<(usize, bool)> = rt.block_on(async {
        dfut::as_completed(fs)
            .map(|(i, r)| (i, r.is_ok()))
            .collect()
            .await
    });
    assert_eq!(order, vec![(1, false), (2, true), (0, true)]);
}

#[test]
fn then_chains_without_fetching_to_the_driver() {
    let rt = cluster(3);
    let _g = rt.enter();
    let before = rt.client().stats().fetched_bytes;
    let big = bytes(1 << 20, 1);
    let total = big.then(sum_bytes).then(inc);
    assert_eq!(total.get_timeout(LIMIT), Ok((1 << 20) + 1));
    assert_eq!(
        rt.client().stats().fetched_bytes,
        before,
        "nothing large was fetched"
    );
}

#[test]
fn tree_reduction_matches_a_local_fold_for_every_fan_in() {
    let rt = cluster(3);
    let _g = rt.enter();
    let expected: u64 = (0..200).map(|i| i * i).sum();
    for fan_in in [2, 4, 16] {
        let leaves: Vec<_> = (0..200u64).map(|i| echo(i * i)).collect();
        let total = dfut::tree_reduce(leaves, fan_in, sum_many);
        assert_eq!(total.get_timeout(LIMIT), Ok(expected), "fan-in {fan_in}");
    }
    // A failed input surfaces as that input's error.
    let mut leaves: Vec<_> = (0..20u64).map(echo).collect();
    leaves[13] = explode("leaf 13".to_string());
    let total = dfut::tree_reduce(leaves, 4, sum_many);
    let got = total.get_timeout(LIMIT);
    assert!(
        matches!(&got, Err(Error::TaskPanicked { message, .. }) if message == "leaf 13"),
        "{got:?}"
    );
}

/// Counts words the simplest way: char by char, independently of the
/// library's tokenizer and chunking.
fn reference_counts(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if !word.is_empty() {
            *counts.entry(std::mem::take(&mut word)).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn word_count_of_a_checked_in_text_matches_an_independent_count() {
    let rt = cluster(3);
    let _g = rt.enter();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/words.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let expected = reference_counts(&text);
    assert!(expected.len() > 80, "the sample has many distinct words");
    for chunk in [64u64, 333, 1 << 20] {
        let chunks = plan_chunks(std::slice::from_ref(&path), chunk).unwrap();
        let job = dfut::MapReduce::new().fan_in(4).progress(false).run(
            chunks,
            |(p, s, e)| count_file_chunk(p, s, e),
            merge_counts,
        );
        let counts: BTreeMap<String, u64> =
            job.result.get_timeout(LIMIT).unwrap().into_iter().collect();
        assert_eq!(counts, expected, "chunks of {chunk} bytes");
        job.progress.wait();
        assert_eq!(job.progress.failed(), 0);
    }
}

#[test]
fn invalid_utf8_in_an_input_is_reported_with_file_and_offset() {
    let rt = cluster(1);
    let _g = rt.enter();
    let path = std::env::temp_dir().join(format!("dfut-bad-{}.txt", std::process::id()));
    std::fs::write(&path, b"fine words here \xc3\x28 broken").unwrap();
    let name = path.to_string_lossy().into_owned();
    match count_file_chunk(name.clone(), 0, 100).get_timeout(LIMIT) {
        Err(Error::TaskFailed { message, .. }) => {
            assert!(
                message.contains(&name) && message.contains("byte offset 16"),
                "{message}"
            );
        }
        other => panic!("expected a task failure, got {other:?}"),
    }
}

#[test]
fn map_reduce_survives_a_worker_killed_during_the_map_phase() {
    let rt = cluster(3);
    let _g = rt.enter();
    let expected = merge((0..24u64).map(|i| count_text(&synthetic_chunk(i, SYNTHETIC_SEED))));
    let job = dfut::MapReduce::new().fan_in(4).progress(false).run(
        0..24u64,
        |i| count_synthetic(i, SYNTHETIC_SEED),
        merge_counts,
    );
    std::thread::sleep(Duration::from_millis(40));
    assert!(
        job.progress.done() < job.progress.total(),
        "killed during the job"
    );
    rt.kill_worker(0).unwrap();
    let counts = job.result.get_timeout(LIMIT).unwrap();
    assert_eq!(counts, expected, "exact counts despite the lost worker");
}
