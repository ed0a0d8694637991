#[dfut::remote]
fn length(s: &str) -> usize {
    s.len()
}

#[dfut::remote]
fn first(v: Vec<u8>) -> &'static u8 {
    Box::leak(Box::new(v[0]))
}

fn main() {}
