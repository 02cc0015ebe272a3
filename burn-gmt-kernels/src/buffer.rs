//! The radix selection's working memory: 16-bit digits, the histogram of one pass, and the
//! selection buffer (a [`SelectionState`] then a histogram, one segment per selection made
//! together) that the host, the host bodies of [`MaskOps`](crate::MaskOps) and the CubeCL
//! kernels all read and write the same way. Also the two rules every way of selecting shares:
//! which digits hold the non-finite keys ([`RadixPass`]), and what a threshold at `+inf` masks
//! ([`masked_entries`]).

/// Bits of the radix digit one histogram pass resolves.
pub const DIGIT_BITS: u32 = 16;
/// Number of radix digits, hence digit bins of a histogram.
pub const DIGITS: usize = 1 << DIGIT_BITS;
/// Length of a histogram: the digit bins, then the count of entries whose key prefix is below
/// the requested prefix (what lets a caller count masked entries without an extra pass).
pub const HISTOGRAM_LEN: usize = DIGITS + 1;
/// Index of the "below the prefix" bin of a histogram.
pub const BELOW_PREFIX_BIN: usize = DIGITS;
/// Words of a selection's state ([`SelectionState`]): what a one-step selection returns and
/// what a selection buffer begins with.
pub const SELECTION_STATE_LEN: usize = 4;
/// Length of one segment of a selection buffer (an on-device radix selection in progress,
/// see [`MaskOps::radix_select_start`](crate::MaskOps::radix_select_start)): the state words,
/// then a histogram. A buffer holds one segment per selection made together. Read a segment
/// with [`SelectionState::from_words`] and [`selection_histogram`].
pub const SELECTION_LEN: usize = SELECTION_STATE_LEN + HISTOGRAM_LEN;
/// Most selections one selection buffer holds: 256 segments are 64 MiB of counters (a model
/// with more tensors is selected in several buffers, one after the other).
pub const SELECTION_MAX_SEGMENTS: usize = 256;

/// Most gradients one batched launch reads or writes
/// ([`MaskOps::radix_select_count_each`](crate::MaskOps::radix_select_count_each) and
/// [`MaskOps::abs_threshold_mask_each`](crate::MaskOps::abs_threshold_mask_each) on CubeCL):
/// each is a buffer binding of its own, and the kernel is unrolled once per binding. Fewer on
/// a device that binds fewer buffers per kernel (wgpu over lavapipe and Metal: about 30); a
/// longer list takes one launch more per this many. More would cost compile time: NVRTC
/// compiles the 32-binding histogram in well under a second here, the 128-binding one in
/// about 16 s (`tools/cuda-codegen`, 2 shared cores).
pub const LIST_MAX_TENSORS: usize = 32;

/// The selections held by `len` counters: a selection buffer's segments, or 1 for the state
/// words alone (what a one-step selection returns).
///
/// # Panics
/// If `len` is neither [`SELECTION_STATE_LEN`] nor a positive multiple of [`SELECTION_LEN`].
pub fn selection_segments(len: usize) -> usize {
    match len {
        SELECTION_STATE_LEN => 1,
        _ if len > 0 && len.is_multiple_of(SELECTION_LEN) => len / SELECTION_LEN,
        _ => panic!("gradient mask: {len} counters are not a selection buffer"),
    }
}

/// Where the words of selection `segment` begin in a buffer of `len` counters
/// ([`selection_segments`]): `segment` segments in.
pub fn selection_segment_start(len: usize, segment: usize) -> usize {
    match len {
        SELECTION_STATE_LEN => segment * SELECTION_STATE_LEN,
        _ => segment * SELECTION_LEN,
    }
}
// Where the state words and the histogram sit in a selection buffer; the kernels and the host
// bodies use these, everything else reads a `SelectionState`.
pub(crate) const STATE_KEY: usize = 0;
pub(crate) const STATE_REMAINING: usize = 1;
pub(crate) const STATE_BELOW: usize = 2;
pub(crate) const STATE_NON_FINITE: usize = 3;
pub(crate) const SELECTION_HISTOGRAM: usize = SELECTION_STATE_LEN;

/// Where an exact selection stands: during a radix selection, the key prefix chosen so far;
/// at its end, the selected key and the counts that give a gradient's statistics with no
/// counting pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SelectionState {
    /// The key prefix chosen so far; at the end, the selected key (NaN ranks above `+inf`,
    /// every NaN as [`MaskElement::NAN_KEY`](crate::element::MaskElement::NAN_KEY)).
    pub key: u64,
    /// The rank still sought among the entries that share the prefix; at the end, the place
    /// of the sought rank among the ties of `key`.
    pub remaining: u64,
    /// Entries whose key is below the prefix; at the end, below `key`.
    pub below: u64,
    /// NaN and infinite entries (counted by the first digit step).
    pub non_finite: u64,
}

impl SelectionState {
    /// The state at the start of a selection of the `(rank + 1)`-th smallest key.
    pub fn start(rank: u64) -> Self {
        Self {
            remaining: rank,
            ..Self::default()
        }
    }

    /// The state held by the first [`SELECTION_STATE_LEN`] words of `words`: a selection
    /// buffer or the state words of a one-step selection, both of which begin with it.
    ///
    /// # Panics
    /// If `words` is shorter than [`SELECTION_STATE_LEN`].
    pub fn from_words(words: &[u64]) -> Self {
        assert!(
            words.len() >= SELECTION_STATE_LEN,
            "gradient mask: a selection state has {SELECTION_STATE_LEN} words, got {}",
            words.len()
        );
        Self {
            key: words[STATE_KEY],
            remaining: words[STATE_REMAINING],
            below: words[STATE_BELOW],
            non_finite: words[STATE_NON_FINITE],
        }
    }

    /// The state as its words, in the order [`from_words`](Self::from_words) reads them.
    pub fn to_words(self) -> [u64; SELECTION_STATE_LEN] {
        let mut words = [0; SELECTION_STATE_LEN];
        words[STATE_KEY] = self.key;
        words[STATE_REMAINING] = self.remaining;
        words[STATE_BELOW] = self.below;
        words[STATE_NON_FINITE] = self.non_finite;
        words
    }

    /// Entries below the selected threshold of a finished selection of a tensor of `total`
    /// entries, `key` taken at most `inf_key` (a threshold of `+inf` masks every finite entry,
    /// which "below" does not count when the sought rank fell among the non-finite keys).
    pub fn masked(&self, total: u64, inf_key: u64) -> u64 {
        masked_entries(self.key, inf_key, total, self.non_finite, || self.below)
    }
}

/// The histogram of a selection buffer (its words after the state).
pub fn selection_histogram(words: &[u64]) -> &[u64] {
    &words[SELECTION_HISTOGRAM..]
}

/// Largest tensor selected in one step by
/// [`MaskOps::abs_key_select`](crate::MaskOps::abs_key_select): on a GPU its keys fill
/// 16 KiB of one cube's shared memory.
pub const SMALL_SELECT_MAX_ENTRIES: usize = 4096;

// The work words of a CubeCL one-pass mask, after its selection buffer's segment: the
// bracket kernel writes them, the pass and the start read them (`cube/small.rs`,
// `cube/onepass.rs`).
/// The bracket's lowest key.
pub const WORK_LO: usize = 0;
/// The bracket's highest key (`u32::MAX`: above every key).
pub const WORK_LAST: usize = 1;
/// Entries below the bracket, counted by the pass.
pub const WORK_BELOW: usize = 2;
/// NaN and infinite entries, counted by the pass (the word after [`WORK_BELOW`]: the two are
/// added together).
pub const WORK_NON_FINITE: usize = 3;
/// Entries inside the bracket, counted by the pass (also past the buffer's capacity).
pub const WORK_INSIDE: usize = 4;
/// The route the one-pass start chose (the bracket's entries, or the fallback from the input).
pub const WORK_ROUTE: usize = 5;
/// Work words of a one-pass mask.
pub const WORK_LEN: usize = 6;

/// Entries a threshold of key `key` masks in a tensor of `total` entries, `non_finite` of them
/// NaN or infinite: those below it (`below`, asked only when needed), except that a threshold
/// at or above `+inf` (the sought rank fell among the non-finite keys) masks every finite
/// entry, which "below" does not count.
pub fn masked_entries(
    key: u64,
    inf_key: u64,
    total: u64,
    non_finite: u64,
    below: impl FnOnce() -> u64,
) -> u64 {
    if key >= inf_key {
        total - non_finite
    } else {
        below()
    }
}

/// One radix pass of a selection of keys of `key_bits` bits (see [`radix_passes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RadixPass {
    /// The lowest bit of the digit this pass histograms.
    pub shift: u32,
    /// What the digit step of this pass is told of `+inf`: on the first pass, the digit of
    /// the `+inf` key (the bins from it up hold exactly the non-finite keys, since that key's
    /// top digit has zero low bits for every supported dtype); on later passes [`DIGITS`],
    /// which counts nothing.
    pub inf_digit: u32,
    /// Whether this is the last pass (its digit completes the key).
    pub last: bool,
}

impl RadixPass {
    /// The non-finite entries a histogram of this pass counts, on the first pass.
    pub fn non_finite(&self, hist: &[u64]) -> Option<u64> {
        non_finite_in(hist, self.inf_digit)
    }
}

/// The passes of a radix selection of keys of `key_bits` bits whose `+inf` key is `inf_key`:
/// one per 16-bit digit, from the top one down.
pub fn radix_passes(key_bits: u32, inf_key: u64) -> impl Iterator<Item = RadixPass> {
    let passes = key_bits / DIGIT_BITS;
    (0..passes).map(move |pass| {
        let shift = key_bits - DIGIT_BITS * (pass + 1);
        RadixPass {
            shift,
            inf_digit: match pass {
                0 => (inf_key >> shift) as u32,
                _ => DIGITS as u32,
            },
            last: pass + 1 == passes,
        }
    })
}

/// The entries of `hist`'s digit bins from `inf_digit` up (the non-finite ones, on a first
/// pass), or `None` when `inf_digit` is [`DIGITS`] (a later pass).
fn non_finite_in(hist: &[u64], inf_digit: u32) -> Option<u64> {
    let from = inf_digit as usize;
    (from < DIGITS).then(|| hist[from..DIGITS].iter().sum())
}

/// The bin of `counts` that holds the entry of 0-based rank `rank`, and the entries counted in
/// the bins before it: one radix digit of a selection.
///
/// # Panics
/// If `rank` is not below the entries counted (a rank past the end).
pub fn digit_of_rank(counts: &[u64], rank: u64) -> (usize, u64) {
    let mut before = 0u64;
    let digit = counts
        .iter()
        .position(|&count| {
            let found = rank < before + count;
            if !found {
                before += count;
            }
            found
        })
        .expect("gradient mask: rank below the number of entries in the prefix");
    (digit, before)
}

/// One step of a radix selection on a selection buffer (layout of [`SELECTION_LEN`]: the
/// state, then a histogram): finds the digit bin that holds the remaining rank, appends that
/// digit to the prefix, takes the entries of the lower bins off the remaining rank, records
/// the entries below the new prefix (the "below" bin plus the lower bins: after the last
/// digit, the entries below the threshold) and clears the histogram for the next pass. On the
/// first pass `inf_digit` is the digit of the `+inf` key and the bins from it up (the
/// non-finite entries) are recorded too; later passes pass [`DIGITS`] and leave that count
/// alone ([`RadixPass::inf_digit`]).
///
/// # Panics
/// If the buffer has another length, or the remaining rank is not below the number of
/// entries counted in the digit bins (the caller asked for a rank past the end).
pub fn select_digit(selection: &mut [u64], inf_digit: u32) {
    assert_eq!(selection.len(), SELECTION_LEN, "selection buffer length");
    let (state_words, hist) = selection.split_at_mut(SELECTION_HISTOGRAM);
    let mut state = SelectionState::from_words(state_words);
    let (digit, before) = digit_of_rank(&hist[..DIGITS], state.remaining);
    if let Some(non_finite) = non_finite_in(hist, inf_digit) {
        state.non_finite = non_finite;
    }
    state.below = hist[BELOW_PREFIX_BIN] + before;
    state.key = (state.key << DIGIT_BITS) | digit as u64;
    state.remaining -= before;
    state_words.copy_from_slice(&state.to_words());
    hist.fill(0);
}

/// A selection buffer at the start of a selection of the `(rank + 1)`-th smallest key.
pub fn selection_buffer(rank: u64) -> Vec<u64> {
    let mut words = vec![0u64; SELECTION_LEN];
    words[..SELECTION_STATE_LEN].copy_from_slice(&SelectionState::start(rank).to_words());
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::MaskElement;

    #[test]
    fn a_selection_state_reads_from_a_buffer_or_its_state_words() {
        let state = SelectionState {
            key: 0x3F80,
            remaining: 2,
            below: 7,
            non_finite: 1,
        };
        let mut buffer = vec![0u64; SELECTION_LEN];
        buffer[..SELECTION_STATE_LEN].copy_from_slice(&state.to_words());
        buffer[SELECTION_HISTOGRAM + 5] = 9;
        assert_eq!(SelectionState::from_words(&buffer), state);
        assert_eq!(SelectionState::from_words(&state.to_words()), state);
        assert_eq!(selection_histogram(&buffer).len(), HISTOGRAM_LEN);
        assert_eq!(selection_histogram(&buffer)[5], 9);
        assert_eq!(SelectionState::start(11).to_words(), [0, 11, 0, 0]);
        // Below `+inf` the masked entries are those below the key; at `+inf`, every finite one.
        assert_eq!(state.masked(10, f32::INF_KEY), 7);
        let at_inf = SelectionState {
            key: f32::NAN_KEY,
            ..state
        };
        assert_eq!(at_inf.masked(10, f32::INF_KEY), 9);
    }

    #[test]
    #[should_panic(expected = "a selection state has 4 words")]
    fn a_short_state_is_refused() {
        SelectionState::from_words(&[1, 2, 3]);
    }

    /// The first pass of each width is told +inf's top digit, the others nothing.
    #[test]
    fn the_first_pass_alone_counts_the_non_finite_digits() {
        let passes: Vec<RadixPass> = radix_passes(32, f32::INF_KEY).collect();
        assert_eq!(passes.len(), 2);
        assert_eq!(
            (passes[0].shift, passes[0].inf_digit, passes[0].last),
            (16, 0x7F80, false)
        );
        assert_eq!(
            (passes[1].shift, passes[1].inf_digit, passes[1].last),
            (0, DIGITS as u32, true)
        );
        let mut hist = vec![0u64; HISTOGRAM_LEN];
        hist[0x7F7F] = 5;
        hist[0x7F80] = 2;
        hist[0x7F80 + 1] = 1;
        assert_eq!(passes[0].non_finite(&hist), Some(3));
        assert_eq!(passes[1].non_finite(&hist), None);
        assert_eq!(radix_passes(64, f64::INF_KEY).count(), 4);
        assert_eq!(
            masked_entries(f32::INF_KEY, f32::INF_KEY, 10, 3, || unreachable!()),
            7
        );
        assert_eq!(masked_entries(5, f32::INF_KEY, 10, 3, || 4), 4);
    }
}
