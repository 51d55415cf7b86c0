//! `HotKeys` on streams: a Zipf stream's true top ten found in order, and memory fixed
//! whatever the number and size of the keys.
#![cfg(feature = "std")]

use singleflight_stats::HotKeys;

/// SplitMix64: a small deterministic generator, so every run sees the same stream.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Ranks `0..n` drawn with probability proportional to `1 / (rank + 1)^exponent`.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, exponent: f64) -> Self {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= total);
        Self { cdf }
    }

    fn sample(&self, rng: &mut SplitMix64) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// The key of a rank, written into `buf` without allocating: `item:<rank>`, padded so
/// that keys are not all of one length.
fn key(buf: &mut [u8; 32], rank: u64) -> &[u8] {
    let prefix = b"item:";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 20];
    let mut n = rank;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[prefix.len() + i] = digits[len - 1 - i];
    }
    &buf[..prefix.len() + len]
}

#[test]
fn zipf_stream_top_ten_is_found_in_order() {
    const KEYS: usize = 100_000;
    const EVENTS: usize = 1_000_000;
    let zipf = Zipf::new(KEYS, 1.1);
    let mut rng = SplitMix64(0x5eed);
    let hot = HotKeys::new(1_000);
    let mut truth = vec![0u64; KEYS];
    let mut buf = [0u8; 32];
    for _ in 0..EVENTS {
        let rank = zipf.sample(&mut rng);
        truth[rank] += 1;
        hot.record_join(key(&mut buf, rank as u64));
    }
    assert_eq!(hot.joins(), EVENTS as u64);

    let mut by_count: Vec<usize> = (0..KEYS).collect();
    by_count.sort_by_key(|&rank| std::cmp::Reverse(truth[rank]));
    // The order is well defined: the true top eleven have distinct counts.
    assert!(by_count[..11].windows(2).all(|w| truth[w[0]] > truth[w[1]]));
    let expected: Vec<Vec<u8>> = by_count[..10]
        .iter()
        .map(|&rank| key(&mut buf, rank as u64).to_vec())
        .collect();

    let top = hot.top_joins(10);
    let found: Vec<Vec<u8>> = top.iter().map(|h| h.key.clone()).collect();
    assert_eq!(
        found
            .iter()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>(),
        expected
            .iter()
            .map(|k| String::from_utf8_lossy(k))
            .collect::<Vec<_>>()
    );
    for (hot_key, &rank) in top.iter().zip(&by_count) {
        // Space-saving never undercounts, and overcounts by at most `error`.
        assert!(hot_key.guaranteed() <= truth[rank] && truth[rank] <= hot_key.count);
        assert!(hot_key.error <= (EVENTS / 1_000) as u64);
    }
    eprintln!(
        "top 10 of {EVENTS} Zipf(1.1) events over {KEYS} keys, 1000 slots: {:?}",
        top.iter()
            .zip(&by_count)
            .map(|(h, &rank)| (
                String::from_utf8_lossy(&h.key).into_owned(),
                h.count,
                truth[rank]
            ))
            .collect::<Vec<_>>()
    );
}

/// Feeds `distinct` keys (each seen `repeats` times, interleaved), each `len` bytes or
/// more, and checks the memory never moved and the counts add up.
fn memory_stays_fixed(distinct: u64, repeats: u64, len: usize) {
    let hot = HotKeys::new(1_000);
    let before = hot.memory_bytes();
    // The bound the docs state, and its value for 1,000 slots of 64-byte keys on a 64-bit
    // target: under 300 KB.
    let bound = HotKeys::memory_bound(1_000, 64);
    assert!(before <= bound, "{before} > {bound}");
    assert!(bound < 300_000, "{bound}");

    let mut buf = vec![b'k'; len + 20];
    for _ in 0..repeats {
        for i in 0..distinct {
            let k = key((&mut buf[..32]).try_into().unwrap(), i);
            let k_len = k.len();
            // Make the key `len` bytes or more: the counter digits first, padding after.
            let end = k_len.max(len);
            hot.record_execution(&buf[..end]);
        }
    }
    assert_eq!(
        hot.memory_bytes(),
        before,
        "no growth after {distinct} keys"
    );
    let held = hot.top_executions(usize::MAX);
    assert_eq!(held.len(), 1_000.min(distinct as usize));
    assert!(held.iter().all(|h| h.key.len() <= 64));
    // Every event landed on exactly one held key.
    assert_eq!(
        held.iter().map(|h| h.count).sum::<u64>(),
        distinct * repeats
    );
    eprintln!("{distinct} distinct keys of {len}+ bytes: {before} bytes (bound {bound})");
}

#[test]
fn memory_is_fixed_with_ten_thousand_long_keys() {
    // 10k distinct keys of a kilobyte each, three times over: held by their first 64 bytes.
    memory_stays_fixed(10_000, 3, 1_024);
}

#[test]
fn memory_is_fixed_with_ten_million_keys() {
    // Keys are written into one buffer on the fly, so the stream itself allocates nothing;
    // about 3 s in a debug build, under 1 s in release, on a 2-core machine.
    memory_stays_fixed(10_000_000, 1, 16);
}
