//! The seeded random stream of every generated data set (the study's problems, fine-tuning
//! order and noise; the LLM task's questions): SplitMix64, from `rand_xoshiro`. Its output is
//! fixed by its definition, so the data sets, and with them the reported scores, depend on the
//! seed alone, never on a library's choice of default generator.

pub use rand_core::{Rng, SeedableRng};
pub use rand_xoshiro::SplitMix64;

/// The SplitMix64 stream whose state starts at `seed`: each draw adds the golden-ratio
/// increment to the state and returns its [`stable_hash`](crate::hash::stable_hash).
pub fn stream(seed: u64) -> SplitMix64 {
    // `SplitMix64` overrides `seed_from_u64` to take the seed as its state (the trait's default
    // would first scramble it with a PCG): the first draw is `stable_hash(seed + φ)`.
    SplitMix64::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::stable_hash;

    /// The step the study's data and the LLM task drew with before this crate existed,
    /// written out as the reference.
    fn reference_next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let z = *state;
        let z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    #[test]
    fn stream_equals_the_splitmix64_step_bit_for_bit() {
        // Seeds as the examples form them: small seeds, seeds tagged in high bits, the
        // fine-tuning order's, and the extremes (the state wraps).
        let seeds = [
            0,
            1,
            2,
            100 + 4,
            3 ^ 7 << 32 ^ 2 << 40,
            0x5EED_0000 ^ 3,
            u64::MAX,
        ];
        for seed in seeds {
            let mut rng = stream(seed);
            let mut state = seed;
            for draw in 0..1000 {
                assert_eq!(
                    rng.next_u64(),
                    reference_next(&mut state),
                    "seed {seed:#x}, draw {draw}"
                );
            }
        }
    }

    #[test]
    fn first_draw_hashes_the_seed_plus_the_increment() {
        assert_eq!(
            stream(7).next_u64(),
            stable_hash(7u64.wrapping_add(0x9E37_79B9_7F4A_7C15))
        );
    }
}
