//! The cost of `dfut::Serde<T>` (postcard inside rkyv) against rkyv's own
//! encoding, on the same 10,000 records: encoding, decoding into owned
//! values, and (rkyv only) validating the archive to read it in place.
//! No cluster: this is the per-value work each side of a task does.

#![allow(clippy::unwrap_used)] // a failed bench run should stop loudly

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dfut::rkyv::{Archive, Deserialize, Serialize};
use dfut::{Data, Serde};

#[derive(
    Archive, Serialize, Deserialize, serde::Serialize, serde::Deserialize, Clone, PartialEq, Debug,
)]
#[rkyv(crate = dfut::rkyv)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<u32>,
    score: f64,
}

fn records() -> Vec<Record> {
    (0..10_000u64)
        .map(|i| Record {
            id: i,
            name: format!("record-{i}"),
            tags: (0..(i % 8) as u32).collect(),
            score: i as f64 / 7.0,
        })
        .collect()
}

fn serde_against_rkyv(c: &mut Criterion) {
    let values = records();
    let wrapped = Serde(values.clone());
    let rkyv_bytes = values.encode().unwrap();
    let serde_bytes = wrapped.encode().unwrap();
    // Checked outside the timed loops: both decode to the same records.
    assert_eq!(Vec::<Record>::decode(&rkyv_bytes).unwrap(), values);
    assert_eq!(
        Serde::<Vec<Record>>::decode(&serde_bytes).unwrap().0,
        values
    );
    eprintln!(
        "encoded sizes: rkyv {} bytes, Serde (postcard) {} bytes",
        rkyv_bytes.len(),
        serde_bytes.len()
    );

    let mut g = c.benchmark_group("serde_vs_rkyv_10k_records");
    g.throughput(Throughput::Elements(values.len() as u64));
    g.bench_function("rkyv_encode", |b| b.iter(|| values.encode().unwrap()));
    g.bench_function("serde_encode", |b| b.iter(|| wrapped.encode().unwrap()));
    g.bench_function("rkyv_decode", |b| {
        b.iter(|| Vec::<Record>::decode(&rkyv_bytes).unwrap())
    });
    g.bench_function("serde_decode", |b| {
        b.iter(|| Serde::<Vec<Record>>::decode(&serde_bytes).unwrap())
    });
    g.bench_function("rkyv_read_in_place", |b| {
        b.iter(|| {
            let archived = dfut::rkyv::access::<
                dfut::rkyv::Archived<Vec<Record>>,
                dfut::rkyv::rancor::Error,
            >(&rkyv_bytes)
            .unwrap();
            archived.len()
        })
    });
    g.finish();
}

criterion_group!(benches, serde_against_rkyv);
criterion_main!(benches);
