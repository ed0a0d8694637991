struct Counter(u64);

impl Counter {
    #[dfut::remote]
    fn get(&self) -> u64 {
        self.0
    }
}

fn main() {}
