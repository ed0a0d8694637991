#[dfut::remote(gpux)]
fn a() -> u32 {
    1
}

#[dfut::remote(retries = "three")]
fn b() -> u32 {
    1
}

#[dfut::remote(timeout_ms = 0)]
fn c() -> u32 {
    1
}

#[dfut::remote(name = "")]
fn d() -> u32 {
    1
}

#[dfut::remote(cpus = 0)]
fn e() -> u32 {
    1
}

#[dfut::remote(resources(disk = 1, disk = 2))]
fn f() -> u32 {
    1
}

fn main() {}
