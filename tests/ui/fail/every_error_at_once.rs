#[dfut::remote]
unsafe fn many<T>(a: &T, b: impl Clone) -> *const u8 {
    std::ptr::null()
}

fn main() {}
