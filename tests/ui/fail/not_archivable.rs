struct Plain {
    x: u32,
}

#[dfut::remote]
fn take(p: Plain) -> u32 {
    p.x
}

#[dfut::remote]
fn make(x: u32) -> Plain {
    Plain { x }
}

fn main() {}
