//! Every supported shape of remote function compiles and runs.

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
struct Point {
    x: i32,
    y: i32,
}

#[dfut::remote]
fn unit() {}

#[dfut::remote]
fn with_patterns(mut a: u32, (b, c): (u32, u32)) -> u32 {
    a += b;
    a + c
}

#[dfut::remote]
fn fallible(x: u32) -> Result<u32, String> {
    Ok(x)
}

#[dfut::remote]
fn io_fallible(x: u32) -> std::io::Result<u32> {
    Ok(x)
}

#[dfut::remote(retries = 2, gpu)]
fn options(p: Point) -> Point {
    p
}

#[dfut::remote(cpus = 2, gpus = 1, memory_mb = 512, resources(disk = 1, fast_net = 2))]
fn with_resources(x: u32) -> u32 {
    x
}

#[dfut::remote(cost = 2.5)]
fn reduce(parts: dfut::Many<u64>, scale: u64) -> u64 {
    parts.iter().sum::<u64>() * scale
}

#[dfut::remote]
fn in_place(values: dfut::Archived<Vec<u32>>, matrix: dfut::Archived<dfut::matrix::Matrix>) -> usize {
    values.len() + matrix.view().rows()
}

#[dfut::remote]
async fn asynchronous(v: Vec<String>) -> usize {
    v.len()
}

pub mod nested {
    #[dfut::remote]
    pub(crate) fn visible_in_crate(x: u64) -> u64 {
        x
    }
}

fn main() {
    unit_local();
    assert_eq!(with_patterns_local(1, (2, 3)), 6);
    assert_eq!(fallible_local(4), Ok(4));
    assert_eq!(io_fallible_local(4).unwrap(), 4);
    assert_eq!(options_local(Point { x: 1, y: 2 }), Point { x: 1, y: 2 });
    assert_eq!(nested::visible_in_crate_local(9), 9);
    let _: dfut::DistFuture<()> = unit();
    let _: dfut::DistFuture<u32> = fallible(1);
    let _: dfut::DistFuture<usize> = asynchronous(vec![String::new()]);
    assert_eq!(reduce_local(dfut::Many(vec![1, 2]), 2), 6);
    let parts: Vec<dfut::DistFuture<u64>> = Vec::new();
    let _: dfut::DistFuture<u64> = reduce(parts, 1);
    let _: dfut::DistFuture<u64> = reduce(vec![1u64, 2], 1);
    let _: dfut::DistFuture<usize> = in_place(vec![1u32], dfut::matrix::Matrix::zeros(2, 2));
    // Without a runtime, calls fail cleanly instead of panicking.
    assert_eq!(with_patterns(1, (2, 3)).get(), Err(dfut::Error::NoRuntime));
    let names = dfut::registered_functions();
    assert!(names.iter().any(|n| n.ends_with("::nested::visible_in_crate")), "{names:?}");
}
