// burn-ndarray is deprecated upstream but still a backend our users run; we keep serving it.
#![allow(deprecated)]

//! The backend extension every mask operation goes through.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, TensorMetadata, backend_extension};
use burn::tensor::{TensorData, try_read_sync};

use crate::buffer::{
    HISTOGRAM_LEN, SELECTION_HISTOGRAM, SELECTION_LEN, SELECTION_MAX_SEGMENTS, SelectionState,
    select_digit, selection_buffer, selection_segment_start, selection_segments,
};
use crate::element::{MaskElement, inf_key};
use crate::host;
use crate::host_ops::{self, ViaData, counter_data};
use crate::list::GradList;
use crate::with_mask_element;

/// What a backend's [`MaskOps`] selection does well, which decides the way a selection goes
/// (see [`select`](crate::select)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectionCapabilities {
    /// Tensors live in host memory, where reading keys or a histogram costs no transfer.
    pub host_memory: bool,
    /// The largest tensor [`MaskOps::abs_key_select`] takes, in entries.
    pub one_step_max_entries: u64,
    /// The widest key, in bits, the device steps ([`MaskOps::radix_select_start`] and the
    /// rest) take in the backend's own memory; 0 when they are not the backend's way.
    pub device_key_bits: u32,
    /// The device steps select among fewer entries than this, in all (their counters' range).
    pub device_max_entries: u64,
    /// The largest tensor whose per-tensor mask [`MaskOps::abs_key_mask_rank`] selects and
    /// writes in one read-write pass; 0 when the backend selects, then masks (two passes), as
    /// the CPU backends do: on the machine this was measured on, their one pass cost more
    /// than the selection and an in-place masking pass (`docs/performance.md`).
    pub one_pass_max_entries: u64,
    /// The smallest tensor the one read-write pass is worth it for: below it, the launches
    /// the pass adds cost more than the passes over the gradient it saves (a GPU), and the
    /// tensor is selected, then masked (with the other tensors of a step, on a GPU).
    pub one_pass_min_entries: u64,
}

impl SelectionCapabilities {
    /// A CPU backend: everything is read in place on the host, and a lone gradient of any
    /// size is selected in one call.
    pub const HOST: Self = Self {
        host_memory: true,
        one_step_max_entries: u64::MAX,
        device_key_bits: 0,
        device_max_entries: 0,
        one_pass_max_entries: 0,
        one_pass_min_entries: 0,
    };

    /// A device that keeps the whole selection in its memory: `u32` counters and 32-bit keys,
    /// one launch for a tensor of at most [`SMALL_SELECT_MAX_ENTRIES`] entries, the one-pass
    /// mask from 16M entries (2^24) to 2^31. The one pass launches 10 kernels for an f32 tensor
    /// where its selection and mask launch 7 alone, or 3 in a step's batch, and saves two
    /// reads of the gradient: 128 MiB at 2^24 f32 entries, some 30 µs on an H100, about what
    /// the launches it adds cost where launching is not hidden behind the GPU's work (issue
    /// 21 measured 0.45 ms fixed per tensor of 7 launches on an H200). Not measured yet:
    /// `scripts/gpu-check.sh` times both ways at every size.
    ///
    /// [`SMALL_SELECT_MAX_ENTRIES`]: crate::buffer::SMALL_SELECT_MAX_ENTRIES
    pub const DEVICE: Self = Self {
        host_memory: false,
        one_step_max_entries: crate::buffer::SMALL_SELECT_MAX_ENTRIES as u64,
        device_key_bits: 32,
        device_max_entries: u32::MAX as u64,
        one_pass_max_entries: 1 << 31,
        one_pass_min_entries: 1 << 24,
    };
}

/// Gradient-mask operations, implemented per backend: what a backend implementor touches.
/// Callers use the tensor-level interface of [`mask`](crate::mask), which calls these.
///
/// The default bodies run on the host through [`host`] and serve any backend, at the price of
/// a device round trip; the CPU backends override them to work on their storage directly, in
/// place when the tensor is not shared, and CubeCL (every GPU runtime) overrides them with
/// kernels (`cube` module), so that a whole mask, selection included, stays on the device.
///
/// Conventions shared by every method:
/// - Keys: `|x|` ranked by its order-preserving integer key ([`crate::element`]).
/// - Thresholds are one-element tensors of the gradient's dtype, so a device can keep them in
///   its own memory between selection and masking.
/// - Random draws use the row-major index of each entry ([`crate::random`]).
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Cube: cfg(feature = "cube"),
    Fusion: cfg(feature = "cube"),
)]
pub trait MaskOps: Backend {
    /// What this backend's selection does well, which picks the way
    /// [`select_abs`](crate::mask::select_abs) goes. The default is a device's that keeps the
    /// whole selection in its own memory (CubeCL); the CPU backends answer
    /// [`SelectionCapabilities::HOST`]. `like` names the device.
    #[fusion(default)]
    fn selection_capabilities(like: &FloatTensor<Self>) -> SelectionCapabilities {
        let _ = like;
        SelectionCapabilities::DEVICE
    }

    /// Radix histogram of `|grad|` for one pass, as an integer tensor of length
    /// [`HISTOGRAM_LEN`]; see [`host::abs_key_histogram`].
    ///
    /// The count dtype is the backend's: `I64` on the CPU backends and in the host fallback,
    /// `U32` on CubeCL (its devices count with 32-bit atomics and may have no 64-bit integers;
    /// a tensor there holds fewer than 2^32 entries). Read it with
    /// [`TensorData::iter::<i64>`](TensorData::iter), which widens either.
    #[fusion(dtype = burn::tensor::DType::U32, shape = histogram_shape())]
    fn abs_key_histogram(grad: &FloatTensor<Self>, shift: u32, prefix: u64) -> IntTensor<Self> {
        host_ops::abs_key_histogram::<Self, ViaData>(grad, shift, prefix)
    }

    /// `count` `|grad|` keys at drawn positions ([`host::sample_keys`]), as `I64`: the sample
    /// a bracket selection over several tensors starts from. For backends whose tensors live in
    /// host memory ([`SelectionCapabilities::host_memory`]); elsewhere the default body reads
    /// the tensor back.
    #[fusion(default)]
    fn abs_key_sample(grad: &FloatTensor<Self>, count: u64) -> IntTensor<Self> {
        host_ops::abs_key_sample::<Self, ViaData>(grad, count)
    }

    /// One read of `grad` against the key bracket `lo..=last`: the words of
    /// [`host::scan_bracket`] (`[below, inside, non_finite, overflow, keys...]`, at most `cap`
    /// keys), as `I64`. For host-memory backends, as [`MaskOps::abs_key_sample`].
    #[fusion(default)]
    fn abs_key_bracket(grad: &FloatTensor<Self>, lo: u64, last: u64, cap: u64) -> IntTensor<Self> {
        host_ops::abs_key_bracket::<Self, ViaData>(grad, host::KeyBracket { lo, last }, cap)
    }

    /// Starts exact selections, one per rank of `ranks` (each seeking the `(rank + 1)`-th
    /// smallest `|g|` key of its own gradients), held on the device: a selection buffer of one
    /// segment of [`SELECTION_LEN`] counters per rank (the state words of a
    /// [`SelectionState`], then a cleared histogram), at most [`SELECTION_MAX_SEGMENTS`].
    /// `like` only names the device.
    ///
    /// A selection is [`radix_select_count`](MaskOps::radix_select_count) of every gradient
    /// into its segment, then [`radix_select_digit`](MaskOps::radix_select_digit) (every
    /// segment at once), once per 16-bit digit of the key, then
    /// [`radix_select_threshold`](MaskOps::radix_select_threshold) (every threshold at once):
    /// nothing is read back to the host in between, and the steps that do not read a gradient
    /// are one call for all the selections of a step. Counts are `U32` on CubeCL, which
    /// therefore selects among fewer than 2^32 entries per segment and keys of at most 32 bits
    /// (f32, f16, bf16).
    #[fusion(dtype = burn::tensor::DType::U32, shape = selection_shape(ranks.len()))]
    fn radix_select_start(like: &FloatTensor<Self>, ranks: Vec<u64>) -> IntTensor<Self> {
        check_segments(ranks.len());
        let words = ranks.iter().flat_map(|&rank| selection_buffer(rank));
        Self::int_from_data(counter_data(words.collect()), &like.device())
    }

    /// The exact selection of the `(rank + 1)`-th smallest `|grad|` key in one step: the
    /// [`SELECTION_STATE_LEN`](crate::buffer::SELECTION_STATE_LEN) words of its final [`SelectionState`] (what a selection buffer
    /// begins with); `rank` is below the entry count. The host bodies take any size
    /// ([`host::select_abs_key`]: one read of the tensor in the common case); CubeCL takes
    /// tensors of at most [`SMALL_SELECT_MAX_ENTRIES`](crate::buffer::SMALL_SELECT_MAX_ENTRIES)
    /// entries (one launch instead of five).
    #[fusion(dtype = burn::tensor::DType::U32, shape = burn::tensor::Shape::new([crate::buffer::SELECTION_STATE_LEN]))]
    fn abs_key_select(grad: &FloatTensor<Self>, rank: u64) -> IntTensor<Self> {
        host_ops::abs_key_select::<Self, ViaData>(grad, rank)
    }

    /// Adds to segment `segment` of `selection` the histogram of the digit at `shift` of the
    /// `|grad|` keys whose higher bits equal that segment's prefix (as
    /// [`MaskOps::abs_key_histogram`] counts).
    #[fusion(dtype = selection, shape = selection)]
    fn radix_select_count(
        grad: &FloatTensor<Self>,
        selection: IntTensor<Self>,
        shift: u32,
        segment: u32,
    ) -> IntTensor<Self> {
        let device = grad.device();
        let mut words = read_words::<Self>(selection);
        let own = segment_words(&mut words, segment as usize);
        let prefix = SelectionState::from_words(own).key;
        let hist = host_ops::histogram_counts::<Self, ViaData>(grad, shift, prefix);
        own[SELECTION_HISTOGRAM..]
            .iter_mut()
            .zip(hist)
            .for_each(|(w, h)| *w += h);
        Self::int_from_data(counter_data(words), &device)
    }

    /// [`radix_select_count`](MaskOps::radix_select_count) of every gradient of `grads`,
    /// gradient `i` into segment `segments[i]`. On CubeCL this is one launch for all of them
    /// (one per vector width in use and per [`LIST_MAX_TENSORS`] gradients), so the launches
    /// of a step do not grow with its tensors.
    ///
    /// [`LIST_MAX_TENSORS`]: crate::buffer::LIST_MAX_TENSORS
    #[fusion(dtype = selection, shape = selection)]
    fn radix_select_count_each(
        #[extension_type] grads: GradList<Self>,
        selection: IntTensor<Self>,
        shift: u32,
        segments: Vec<u32>,
    ) -> IntTensor<Self> {
        check_list(grads.tensors.len(), segments.len(), "segment");
        grads
            .tensors
            .iter()
            .zip(segments)
            .fold(selection, |selection, (grad, segment)| {
                Self::radix_select_count(grad, selection, shift, segment)
            })
    }

    /// In every segment of `selection`: picks the digit of the sought rank from the counted
    /// histogram, appends it to the prefix, records the counts below it (and, on the first
    /// pass, where `inf_digit` is the digit of the `+inf` key rather than `DIGITS`, the
    /// non-finite entries) and clears the histogram ([`select_digit`]). After the last
    /// digit the state words hold what a one-gradient selection's statistics need: no
    /// counting pass.
    #[fusion(dtype = selection, shape = selection)]
    fn radix_select_digit(selection: IntTensor<Self>, inf_digit: u32) -> IntTensor<Self> {
        let device = selection.device();
        let mut words = read_words::<Self>(selection);
        words
            .chunks_mut(SELECTION_LEN)
            .for_each(|segment| select_digit(segment, inf_digit));
        Self::int_from_data(counter_data(words), &device)
    }

    /// The selected values, one per segment of `selection`, as a tensor of `like`'s dtype:
    /// each the value whose key is its segment's prefix, at most `+inf` (so NaN and ±inf are
    /// never below it). `selection` is a selection buffer or the state words of a one-step
    /// selection (which a buffer segment begins with).
    #[fusion(dtype = like, shape = threshold_shape(selection))]
    fn radix_select_threshold(
        like: &FloatTensor<Self>,
        selection: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        let words = read_words::<Self>(selection);
        let dtype = like.dtype();
        let inf = inf_key(dtype).expect("a supported float dtype");
        let keys = (0..selection_segments(words.len())).map(|segment| {
            let start = selection_segment_start(words.len(), segment);
            SelectionState::from_words(&words[start..]).key.min(inf)
        });
        let keys: Vec<u64> = keys.collect();
        let len = keys.len();
        let data = with_mask_element!(dtype, E => {
            TensorData::new(keys.into_iter().map(E::from_key).collect::<Vec<_>>(), [len])
        });
        Self::float_from_data(data, &like.device())
    }

    /// `grad` with its `rank` smallest `|g|` zeroed (rank below the entry count; NaN ranks
    /// above `+inf`, and NaN and ±inf are never zeroed: the threshold is taken at most
    /// `+inf`), selected and masked in one read-write pass ([`host::mask_smallest`]: a sampled
    /// bracket, one pass that masks below it and keeps the few entries inside it, the
    /// selection among those and a fix-up of the ones below the threshold), with the
    /// [`SELECTION_STATE_LEN`](crate::buffer::SELECTION_STATE_LEN) state words of the
    /// selection, as [`MaskOps::abs_key_select`] returns them. The same result as
    /// [`abs_key_select`](MaskOps::abs_key_select), then
    /// [`abs_threshold_mask`](MaskOps::abs_threshold_mask) at its threshold. Routing calls it
    /// only where [`SelectionCapabilities::one_pass_max_entries`] allows.
    #[fusion(meta = |grad, _rank| (grad.clone(), burn::backend::fusion::custom::TensorSpec::new(
        burn::tensor::Shape::new([crate::buffer::SELECTION_STATE_LEN]),
        burn::tensor::DType::U32,
    )))]
    fn abs_key_mask_rank(
        grad: FloatTensor<Self>,
        rank: u64,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        host_ops::abs_key_mask_rank::<Self, ViaData>(grad, rank)
    }

    /// `[masked, non_finite]` of `grad` against `threshold` ([`host::abs_threshold_count`]):
    /// what [`MaskOps::abs_threshold_mask`] zeroes and what it never touches.
    #[fusion(dtype = burn::tensor::DType::U32, shape = burn::tensor::Shape::new([2]))]
    fn abs_threshold_count(
        grad: &FloatTensor<Self>,
        threshold: &FloatTensor<Self>,
    ) -> IntTensor<Self> {
        host_ops::abs_threshold_count::<Self, ViaData>(grad, threshold)
    }

    /// `grad` with the entries whose `|g|` is below `threshold` zeroed (NaN and ±inf kept).
    #[fusion(dtype = grad, shape = grad)]
    fn abs_threshold_mask(
        grad: FloatTensor<Self>,
        threshold: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        host_ops::abs_threshold_mask::<Self, ViaData>(grad, threshold)
    }

    /// Every gradient of `grads` masked as [`abs_threshold_mask`](MaskOps::abs_threshold_mask)
    /// masks one, gradient `i` against `thresholds[slots[i]]` (a step's thresholds, as
    /// [`radix_select_threshold`](MaskOps::radix_select_threshold) writes them). On CubeCL one
    /// launch for all of them, as [`radix_select_count_each`](MaskOps::radix_select_count_each).
    #[fusion(meta = |grads, _thresholds, _slots| grads.clone())]
    fn abs_threshold_mask_each(
        #[extension_type] grads: GradList<Self>,
        thresholds: FloatTensor<Self>,
        slots: Vec<u32>,
    ) -> GradList<Self> {
        mask_each_alone::<Self>(grads.tensors, thresholds, slots)
    }

    /// `updated`, except that entries whose gradient `|g|` is below `threshold` take their
    /// `previous` value: masked parameters do not move.
    #[fusion(dtype = updated, shape = updated)]
    fn abs_threshold_select(
        grad: FloatTensor<Self>,
        threshold: FloatTensor<Self>,
        updated: FloatTensor<Self>,
        previous: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        host_ops::abs_threshold_select::<Self, ViaData>(grad, threshold, updated, previous)
    }

    /// `grad` with a random fraction of its finite entries zeroed (entry drawn when its draw
    /// under `key` is below `bound`) and the kept finite entries multiplied by `scale`.
    #[fusion(dtype = grad, shape = grad)]
    fn random_mask(grad: FloatTensor<Self>, key: u64, bound: u64, scale: f64) -> FloatTensor<Self> {
        host_ops::random_mask::<Self, ViaData>(grad, key, bound, scale)
    }

    /// `[masked, non_finite]` of what [`MaskOps::random_mask`] does to `grad` (`U32` on
    /// CubeCL, `I64` elsewhere).
    #[fusion(dtype = burn::tensor::DType::U32, shape = burn::tensor::Shape::new([2]))]
    fn random_mask_count(grad: &FloatTensor<Self>, key: u64, bound: u64) -> IntTensor<Self> {
        host_ops::random_mask_count::<Self, ViaData>(grad, key, bound)
    }
}

/// [`MaskOps::abs_threshold_mask_each`] one gradient at a time: each masked by
/// [`MaskOps::abs_threshold_mask`] against its threshold, sliced out of `thresholds`. The
/// default body, and CubeCL's way for the dtypes its batched kernel does not take (f64).
pub(crate) fn mask_each_alone<B: MaskOps>(
    grads: Vec<FloatTensor<B>>,
    thresholds: FloatTensor<B>,
    slots: Vec<u32>,
) -> GradList<B> {
    check_list(grads.len(), slots.len(), "threshold slot");
    let count = thresholds.shape().num_elements();
    let masked = grads.into_iter().zip(slots).map(|(grad, slot)| {
        assert!(
            (slot as usize) < count,
            "gradient mask: threshold slot {slot} of {count} thresholds"
        );
        let slot = slot as isize;
        let threshold = B::float_slice(
            thresholds.clone(),
            &[burn::tensor::Slice::new(slot, Some(slot + 1), 1)],
        );
        B::abs_threshold_mask(grad, threshold)
    });
    GradList::new(masked.collect())
}

/// Checks that a batched operation has one `what` per gradient.
pub(crate) fn check_list(tensors: usize, per_tensor: usize, what: &str) {
    assert_eq!(
        tensors, per_tensor,
        "gradient mask: one {what} per gradient of a batched operation"
    );
}

/// Shape of a selection buffer of `segments` segments (the Fusion output metadata).
#[cfg_attr(not(feature = "cube"), allow(dead_code))]
pub(crate) fn selection_shape(segments: usize) -> burn::tensor::Shape {
    burn::tensor::Shape::new([segments * SELECTION_LEN])
}

/// Shape of the thresholds of a selection buffer (or state words) of shape `selection`: one
/// per segment (the Fusion output metadata).
#[cfg_attr(not(feature = "cube"), allow(dead_code))]
pub(crate) fn threshold_shape(selection: &burn::tensor::Shape) -> burn::tensor::Shape {
    burn::tensor::Shape::new([selection_segments(selection.num_elements())])
}

/// Refuses a selection buffer of no segment or of more than [`SELECTION_MAX_SEGMENTS`].
pub(crate) fn check_segments(segments: usize) {
    assert!(
        (1..=SELECTION_MAX_SEGMENTS).contains(&segments),
        "gradient mask: a selection buffer holds 1 to {SELECTION_MAX_SEGMENTS} selections, not {segments}"
    );
}

/// The words of segment `segment` of a selection buffer.
fn segment_words(words: &mut [u64], segment: usize) -> &mut [u64] {
    let start = segment * SELECTION_LEN;
    assert!(
        start + SELECTION_LEN <= words.len(),
        "gradient mask: segment {segment} of a {}-word selection buffer",
        words.len()
    );
    &mut words[start..start + SELECTION_LEN]
}

/// An integer tensor of counters read to the host, widened to `u64`.
fn read_words<B: Backend>(tensor: IntTensor<B>) -> Vec<u64> {
    const MSG: &str = "gradient mask: reading counters back to the host failed";
    try_read_sync(B::int_into_data(tensor))
        .expect(MSG)
        .expect(MSG)
        .iter::<i64>()
        .map(|w| w as u64)
        .collect()
}

/// Shape of a histogram tensor: [`HISTOGRAM_LEN`] counts (the Fusion output metadata).
#[cfg_attr(not(feature = "cube"), allow(dead_code))]
pub(crate) fn histogram_shape() -> burn::tensor::Shape {
    burn::tensor::Shape::new([HISTOGRAM_LEN])
}

/// The `MaskOps` methods of a CPU backend, on its own storage ([`InPlace`]); the radix
/// selection steps keep the trait's host bodies.
macro_rules! host_mask_ops {
    ($backend:ty) => {
        impl $crate::ops::MaskOps for $backend {
            fn selection_capabilities(
                _like: &FloatTensor<Self>,
            ) -> $crate::ops::SelectionCapabilities {
                $crate::ops::SelectionCapabilities::HOST
            }

            fn abs_key_select(grad: &FloatTensor<Self>, rank: u64) -> IntTensor<Self> {
                $crate::host_ops::abs_key_select::<Self, InPlace>(grad, rank)
            }

            fn abs_key_sample(grad: &FloatTensor<Self>, count: u64) -> IntTensor<Self> {
                $crate::host_ops::abs_key_sample::<Self, InPlace>(grad, count)
            }

            fn abs_key_bracket(
                grad: &FloatTensor<Self>,
                lo: u64,
                last: u64,
                cap: u64,
            ) -> IntTensor<Self> {
                let bracket = $crate::host::KeyBracket { lo, last };
                $crate::host_ops::abs_key_bracket::<Self, InPlace>(grad, bracket, cap)
            }

            fn abs_key_histogram(
                grad: &FloatTensor<Self>,
                shift: u32,
                prefix: u64,
            ) -> IntTensor<Self> {
                $crate::host_ops::abs_key_histogram::<Self, InPlace>(grad, shift, prefix)
            }

            fn abs_threshold_mask(
                grad: FloatTensor<Self>,
                threshold: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                $crate::host_ops::abs_threshold_mask::<Self, InPlace>(grad, threshold)
            }

            fn abs_key_mask_rank(
                grad: FloatTensor<Self>,
                rank: u64,
            ) -> (FloatTensor<Self>, IntTensor<Self>) {
                $crate::host_ops::abs_key_mask_rank::<Self, InPlace>(grad, rank)
            }

            fn abs_threshold_select(
                grad: FloatTensor<Self>,
                threshold: FloatTensor<Self>,
                updated: FloatTensor<Self>,
                previous: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                $crate::host_ops::abs_threshold_select::<Self, InPlace>(
                    grad, threshold, updated, previous,
                )
            }

            fn abs_threshold_count(
                grad: &FloatTensor<Self>,
                threshold: &FloatTensor<Self>,
            ) -> IntTensor<Self> {
                $crate::host_ops::abs_threshold_count::<Self, InPlace>(grad, threshold)
            }

            fn random_mask(
                grad: FloatTensor<Self>,
                key: u64,
                bound: u64,
                scale: f64,
            ) -> FloatTensor<Self> {
                $crate::host_ops::random_mask::<Self, InPlace>(grad, key, bound, scale)
            }

            fn random_mask_count(
                grad: &FloatTensor<Self>,
                key: u64,
                bound: u64,
            ) -> IntTensor<Self> {
                $crate::host_ops::random_mask_count::<Self, InPlace>(grad, key, bound)
            }
        }
    };
}
#[cfg_attr(not(any(feature = "flex", feature = "ndarray")), allow(unused_imports))]
pub(crate) use host_mask_ops;
