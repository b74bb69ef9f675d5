//! SplitMix64: the harness's deterministic draws (query constants), seeded from the command line.

pub struct Rng(u64);

impl Rng {
    #[cfg(test)]
    pub fn new(seed: u64) -> Self {
        Self::scrambled(seed)
    }

    /// A generator whose state is a mixed `seed`: close seeds (1 and 2, or rounds differing in
    /// one bit) then give unrelated draws from the first one on.
    fn scrambled(seed: u64) -> Self {
        let mut r = Rng(seed);
        let a = r.next_u64();
        let mut r = Rng(a ^ seed.rotate_left(29));
        let b = r.next_u64();
        Rng(b)
    }

    /// A generator for one (round, template) pair, independent of how many draws others made.
    pub fn for_instance(seed: u64, workload: &str, round: u32, template: &str) -> Self {
        let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
        for b in workload
            .bytes()
            .chain([0])
            .chain(template.bytes())
            .chain([0])
            .chain(round.to_le_bytes())
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Self::scrambled(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}
