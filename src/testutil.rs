//! Helpers for unit tests.

/// A seeded xorshift generator: `next(n)` is a number below `n`. Reproducible, no crate.
pub fn xorshift(seed: u64) -> impl FnMut(usize) -> usize {
    let mut x = seed | 1;
    move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    }
}
