//! The one seeded generator of the project (SplitMix64): the synthetic
//! corpus, the item stages' per-item draws and the model data side's
//! shuffles, pairings and augmentation. Every draw is a pure function of a
//! seed and a position (or an item's key), so threads, shards and a resumed
//! run see exactly the numbers an uninterrupted run would.

/// A number in `[0, 1)` from the seed, a purpose and the item's key.
pub fn unit(seed: u64, purpose: &str, key: &str) -> f64 {
    let h = blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .update(purpose.as_bytes())
        .update(&[0])
        .update(key.as_bytes())
        .finalize();
    let x = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// SplitMix64: the same seed gives the same stream on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for a stream identified by several keys (seed, epoch, ...).
    pub fn from_keys(keys: &[u64]) -> Rng {
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        for &k in keys {
            r.0 ^= k;
            r.next_u64();
        }
        r
    }

    /// A generator for one purpose of one item, independent of any other.
    pub fn for_item(seed: u64, purpose: &str, key: &str) -> Rng {
        Rng((unit(seed, purpose, key) * (1u64 << 53) as f64) as u64)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, 1)` (the same draw as [`Rng::uniform`]).
    pub fn next_f64(&mut self) -> f64 {
        self.uniform()
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `[0, n)`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// Roughly normal (sum of uniforms), mean 0, standard deviation 1.
    pub fn normal(&mut self) -> f64 {
        (0..4).map(|_| self.uniform()).sum::<f64>() * 3f64.sqrt() - 2.0 * 3f64.sqrt()
    }
}

/// A seeded Fisher-Yates shuffle.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    Rng::new(seed).shuffle(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streams are SplitMix64's, checked against an independent
    /// implementation (Python, 64-bit wrapping arithmetic): every recorded
    /// output (the demo corpus, splits, shuffles) depends on them.
    #[test]
    fn the_streams_are_splitmix64s() {
        let mut r = Rng::new(42);
        assert_eq!(
            [r.next_u64(), r.next_u64(), r.next_u64()],
            [
                0xbdd7_3226_2feb_6e95,
                0x28ef_e333_b266_f103,
                0x4752_6757_130f_9f52
            ]
        );
        let mut r = Rng::from_keys(&[7, 3]);
        assert_eq!(
            [r.next_u64(), r.next_u64(), r.next_u64()],
            [
                0x9f29_8632_8856_675a,
                0x7d49_b80d_1920_1f6a,
                0xbe7b_367b_ae7b_8b17
            ]
        );
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        assert_eq!(a.next_f64(), b.uniform());
        let mut v: Vec<u32> = (0..10).collect();
        shuffle(&mut v, 9);
        let mut w: Vec<u32> = (0..10).collect();
        Rng::new(9).shuffle(&mut w);
        assert_eq!(v, w);
        v.sort();
        assert_eq!(v, (0..10).collect::<Vec<_>>());
    }
}
