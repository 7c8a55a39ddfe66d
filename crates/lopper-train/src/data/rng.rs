//! Seeded random streams for the data sources: one independent `StdRng` per (seed, stream, index),
//! so a batch is a pure function of its inputs and no source keeps a cursor.
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The 64-bit golden ratio, 2^64 / phi: spreads consecutive indices over the seed space.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Named streams, so that two uses of one seed (say the split and the batches) never share draws.
pub(crate) mod streams {
    /// Training windows of a text source; index = step.
    pub const TEXT_TRAIN: u64 = 1;
    /// Per-epoch permutations of an image source; index = epoch.
    pub const IMAGE_EPOCH: u64 = 2;
    /// The train/validation split of [`Images`](super::super::Images); index = class.
    pub const IMAGE_SPLIT: u64 = 3;
}

/// SplitMix64's finalizer: a bijection on u64 with good avalanche.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of draw `index` of `stream` under `seed`.
pub(crate) fn stream(seed: u64, stream: u64, index: u64) -> StdRng {
    let key = splitmix64(seed ^ splitmix64(stream.wrapping_mul(GOLDEN) ^ splitmix64(index)));
    StdRng::seed_from_u64(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: u64 = stream(7, 1, 3).random();
        assert_eq!(a, stream(7, 1, 3).random::<u64>());
        assert_ne!(a, stream(7, 1, 4).random::<u64>());
        assert_ne!(a, stream(7, 2, 3).random::<u64>());
        assert_ne!(a, stream(8, 1, 3).random::<u64>());
        // seed ^ index style collisions: (s, i) and (s ^ 1, i ^ 1) must differ
        assert_ne!(
            stream(6, 1, 2).random::<u64>(),
            stream(7, 1, 3).random::<u64>()
        );
    }
}
