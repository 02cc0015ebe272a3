//! The batched kernels of a `GradMask` step: one launch reads (a histogram pass) or writes
//! (the mask) every gradient of the step, so its launches do not grow with its tensors.
//!
//! Each gradient is a buffer binding of its own (a comptime-sized `Sequence` of buffers: no
//! concatenated copy). The launch covers a list of *pieces*, each a range of one gradient's
//! positions at the launch's vector width, and gives each piece its own run of cubes; a
//! table in device memory holds, per piece, its first cube, its range and its slot (the
//! selection-buffer segment it counts into, or the threshold it is masked against). A cube
//! finds its piece in the table, so the work of a cube is uniform, and runs the code of that
//! piece's binding: the code that reads the gradient is unrolled once per binding, and the
//! branch taken is the same for every unit of the cube (the histogram's barriers stay outside
//! the unrolled code).
//!
//! A gradient whose length is not a multiple of the vector width is two pieces: its whole
//! vectors in the vector launch, its tail in the scalar launch (every tail of the step in
//! one). So a pass is one launch at the widest width, plus one scalar launch if any gradient
//! has a tail, plus one more of each per [`LIST_MAX_TENSORS`] pieces (the bindings a kernel
//! takes).

use cubecl::prelude::*;

use super::histogram::{SAMPLES, count_digits, merge_window, place_window, sample_digit};
use super::key::{KeyKind, wide_key};
use super::mask::mask_below_limit;
#[cfg(not(gmt_cuda_codegen))]
use crate::buffer::LIST_MAX_TENSORS;
use crate::buffer::{SELECTION_HISTOGRAM, SELECTION_LEN, STATE_KEY};

/// Words per piece in the piece table: first cube, first position, end position, slot. The
/// table ends with one more row whose first word is the launch's cube count.
pub const PIECE_WORDS: usize = 4;
const PIECE_CUBE: usize = 0;
const PIECE_START: usize = 1;
const PIECE_END: usize = 2;
const PIECE_SLOT: usize = 3;

/// Where a cube works: its piece (an index into the launch's bindings) and the piece's range,
/// slot, and cube run.
#[derive(CubeType, Clone, Copy)]
pub struct PieceOfCube {
    /// The piece, which is also its binding.
    pub piece: u32,
    /// This cube among the piece's cubes.
    pub cube: usize,
    /// The piece's cubes.
    pub cubes: usize,
    /// The piece's first position (in vectors of the launch's width).
    pub start: usize,
    /// The piece's end position.
    pub end: usize,
    /// The piece's slot.
    pub slot: usize,
}

/// The piece of this cube in `table` (of `count` pieces), or stops the cube when it is past
/// the last piece's cubes (a 2D grid rounds the cube count up). The same for every unit of a
/// cube, so stopping happens before any barrier.
#[cube]
pub fn piece_of_cube(table: &[u32], #[comptime] count: usize) -> PieceOfCube {
    let cube = CUBE_POS as u32;
    if cube >= table[count * PIECE_WORDS + PIECE_CUBE] {
        terminate!();
    }
    // The last piece that starts at or before this cube: a binary search, since pieces start
    // in increasing order. Every unit searches; a linear scan read about as many table words
    // as a unit reads vectors, and measured slower on lavapipe.
    let mut lo = 0usize;
    // `count`, as a runtime value (the table has a row more).
    let mut hi = table.len() / PIECE_WORDS - 1;
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if table[mid * PIECE_WORDS + PIECE_CUBE] <= cube {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let piece = lo as u32;
    let row = lo * PIECE_WORDS;
    let first = table[row + PIECE_CUBE];
    PieceOfCube {
        piece,
        cube: (cube - first) as usize,
        cubes: (table[row + PIECE_WORDS + PIECE_CUBE] - first) as usize,
        start: table[row + PIECE_START] as usize,
        end: table[row + PIECE_END] as usize,
        slot: table[row + PIECE_SLOT] as usize,
    }
}

/// One histogram pass over every piece: each adds the histogram of its digit to its segment
/// (the slot) of `selection`, with the prefix that segment's state holds, exactly as the
/// single-gradient histogram kernel does (the same parts of its `count_cube`).
#[cube(launch_unchecked, create_dummy_kernel, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
pub fn histogram_each_kernel<F: Float, N: Size>(
    grads: &Sequence<Box<[Vector<F, N>]>>,
    table: &[u32],
    selection: &mut [Atomic<u32>],
    shift: u32,
    high_shift: u32,
    #[comptime] window: u32,
    #[comptime] kind: KeyKind,
    #[define(F)] _dtype: ElemType,
) {
    let count = comptime![grads.len()];
    let at = piece_of_cube(table, count);
    let segment_start = at.slot * SELECTION_LEN;
    let prefix = selection[segment_start + STATE_KEY].load();
    let bins = segment_start + SELECTION_HISTOGRAM;
    // Allocated once, whichever binding the cube reads; only the reads of the gradient (the
    // samples and the count) are unrolled per binding, the barriers stay outside them.
    let local = Shared::<[Atomic<u32>]>::new_slice((window + 2u32) as usize);
    let mut samples = Shared::<[u32]>::new_slice(SAMPLES as usize);
    let mut window_base = Shared::<[u32]>::new_slice(1usize);
    let mut sample = 0xFFFF_FFFFu32; // NO_SAMPLE, as a runtime value
    if UNIT_POS < SAMPLES {
        #[unroll]
        for j in 0..count {
            if at.piece == j as u32 {
                sample = sample_digit::<F, N>(
                    &grads[j], at.cube, at.start, at.end, shift, high_shift, prefix, kind,
                );
            }
        }
    }
    let base = place_window(&local, &mut samples, &mut window_base, sample, window);
    let mut below = 0u32;
    #[unroll]
    for j in 0..count {
        if at.piece == j as u32 {
            below = count_digits::<F, N>(
                &grads[j], selection, &local, base, at.cube, at.cubes, at.start, at.end, shift,
                high_shift, prefix, bins, window, kind,
            );
        }
    }
    merge_window(&local, selection, base, below, bins, window);
}

/// Masks every piece in place against its threshold (`thresholds[slot]`): entries whose `|x|`
/// key is below the threshold's are zeroed, as the single-gradient mask kernel does.
#[cube(launch_unchecked, create_dummy_kernel, address_type = "dynamic")]
pub fn mask_each_kernel<F: Float, N: Size>(
    grads: &mut Sequence<Box<[Vector<F, N>]>>,
    table: &[u32],
    thresholds: &[F],
    #[comptime] kind: KeyKind,
    #[define(F)] _dtype: ElemType,
) {
    let count = comptime![grads.len()];
    let at = piece_of_cube(table, count);
    let limit = wide_key::<F, N>(Vector::new(thresholds[at.slot]), kind);
    let units = CUBE_DIM as usize;
    let stride = at.cubes * units;
    #[unroll]
    for j in 0..count {
        if at.piece == j as u32 {
            let grad = grads.index_mut(j);
            let mut pos = at.start + at.cube * units + UNIT_POS as usize;
            while pos < at.end {
                grad[pos] = mask_below_limit::<F, N>(grad[pos], &limit, kind);
                pos += stride;
            }
        }
    }
}

#[cfg(not(gmt_cuda_codegen))]
pub use host_side::*;

#[cfg(not(gmt_cuda_codegen))]
mod host_side {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use burn::backend::cubecl::dtype_to_storage_type;
    use burn::backend::ops::IntTensorOps;
    use burn::tensor::TensorData;
    use burn_cubecl::CubeBackend;
    use burn_cubecl::tensor::CubeTensor;
    use cubecl::client::Client;
    use cubecl::prelude::*;

    use super::super::histogram::pass_shape;
    use super::super::key::KeyKind;
    use super::super::launch::count_launch;
    use super::*;

    /// The most pieces the last plan put in one launch (for tests: `testing`).
    static LIST_LIMIT: AtomicUsize = AtomicUsize::new(0);

    /// The most pieces the last plan put in one launch.
    #[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
    pub fn list_limit() -> usize {
        LIST_LIMIT.load(Ordering::Relaxed)
    }

    /// Vectors per unit below which a piece gets fewer cubes. Twice the single-gradient
    /// histogram's: a batch runs many pieces at once, and each cube pays a fixed cost (its
    /// shared window cleared and merged). On lavapipe 8 made the batched pass 2.7 times the
    /// per-gradient launches' time, 32 1.5 times.
    const VECTORS_PER_UNIT: usize = 32;
    /// Most cubes one piece gets; a grid-stride loop covers the rest.
    const MAX_PIECE_CUBES: usize = 1024;
    /// Units per cube.
    const UNITS: u32 = 256;
    /// Most cubes along one dimension of a launch grid (WebGPU's minimum limit).
    const MAX_GRID_X: u32 = 65_535;

    /// A range of one gradient's positions, counted in vectors of its launch's width.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Piece {
        pub tensor: usize,
        pub start: usize,
        pub end: usize,
        pub slot: u32,
    }

    /// One launch: pieces at one vector width.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct ListLaunch {
        pub vector_size: usize,
        pub pieces: Vec<Piece>,
    }

    /// The launches that cover the gradients of `lens` entries (gradient `i` with slot
    /// `slots[i]`) at `vector_size`: the whole vectors of every gradient at that width, the
    /// tails (and gradients shorter than a vector) at width 1, each in launches of at most
    /// `max_pieces` pieces. Empty gradients have no piece.
    pub(super) fn list_launches(
        lens: &[usize],
        slots: &[u32],
        vector_size: usize,
        max_pieces: usize,
    ) -> Vec<ListLaunch> {
        let mut vectors = Vec::new();
        let mut tails = Vec::new();
        for (tensor, (&len, &slot)) in lens.iter().zip(slots).enumerate() {
            let whole = len / vector_size;
            if whole > 0 && vector_size > 1 {
                vectors.push(Piece {
                    tensor,
                    start: 0,
                    end: whole,
                    slot,
                });
            }
            let tail_start = if vector_size > 1 {
                whole * vector_size
            } else {
                0
            };
            if len > tail_start {
                tails.push(Piece {
                    tensor,
                    start: tail_start,
                    end: len,
                    slot,
                });
            }
        }
        let mut launches = Vec::new();
        for (width, pieces) in [(vector_size, vectors), (1, tails)] {
            for chunk in pieces.chunks(max_pieces.max(1)) {
                launches.push(ListLaunch {
                    vector_size: width,
                    pieces: chunk.to_vec(),
                });
            }
        }
        launches
    }

    /// Cubes of a piece of `vectors` vectors: one per [`VECTORS_PER_UNIT`] vectors a unit,
    /// between 1 and [`MAX_PIECE_CUBES`].
    fn piece_cubes(vectors: usize, units: u32) -> usize {
        vectors
            .div_ceil(units as usize * VECTORS_PER_UNIT)
            .clamp(1, MAX_PIECE_CUBES)
    }

    /// The piece table of `launch` (see [`PIECE_WORDS`]) and its cube count.
    fn piece_table(launch: &ListLaunch, units: u32) -> (Vec<u32>, u32) {
        let mut table = Vec::with_capacity((launch.pieces.len() + 1) * PIECE_WORDS);
        let mut cubes = 0usize;
        for piece in &launch.pieces {
            let word = |x: usize| u32::try_from(x).expect("gradient mask: a position past u32");
            table.extend([word(cubes), word(piece.start), word(piece.end), piece.slot]);
            cubes += piece_cubes(piece.end - piece.start, units);
        }
        let cubes = u32::try_from(cubes).expect("gradient mask: cubes past u32");
        table.extend([cubes, 0, 0, 0]);
        (table, cubes)
    }

    /// A grid of `cubes` cubes (in two dimensions past [`MAX_GRID_X`]; the kernels stop the
    /// cubes past the count).
    fn grid(cubes: u32) -> CubeCount {
        if cubes <= MAX_GRID_X {
            CubeCount::new_1d(cubes)
        } else {
            CubeCount::new_2d(MAX_GRID_X, cubes.div_ceil(MAX_GRID_X))
        }
    }

    /// How a batched operation covers its gradients (contiguous, one dtype, one device).
    pub struct ListPlan {
        client: Client,
        kind: KeyKind,
        storage: ElemType,
        address_type: AddressType,
        units: u32,
        launches: Vec<ListLaunch>,
    }

    impl ListPlan {
        /// The plan for `grads` with their slots, or `None` when their dtype has no kernel.
        pub fn new(grads: &[CubeTensor], slots: &[u32]) -> Option<Self> {
            let first = grads.first()?;
            let kind = KeyKind::of(first.dtype)?;
            let client = first.client.clone();
            let lens: Vec<usize> = grads.iter().map(|g| g.meta.num_elements()).collect();
            // The widest the device reads best for the dtype; gradients shorter than it are
            // tails.
            let vector_size = client
                .io_optimized_vector_sizes(first.dtype.size())
                .next()
                .unwrap_or(1);
            // The gradients, the table and the output buffer are bindings.
            let bindings = client.properties().hardware.max_bindings as usize;
            let max_pieces = LIST_MAX_TENSORS.min(bindings.saturating_sub(3)).max(1);
            LIST_LIMIT.store(max_pieces, Ordering::Relaxed);
            let units = UNITS
                .min(client.properties().hardware.max_units_per_cube)
                .max(1);
            Some(Self {
                kind,
                storage: dtype_to_storage_type(first.dtype),
                address_type: grads
                    .iter()
                    .map(|t| t.required_address_type())
                    .max()
                    .unwrap_or_default(),
                launches: list_launches(&lens, slots, vector_size, max_pieces),
                units,
                client,
            })
        }

        /// Checks that every piece's slot is below `count` (the segments or thresholds the
        /// kernels index with it), failing with `what`.
        fn assert_slots_below(&self, count: usize, what: &str) {
            assert!(
                self.launches
                    .iter()
                    .flat_map(|l| &l.pieces)
                    .all(|p| (p.slot as usize) < count),
                "gradient mask: {what}"
            );
        }

        /// The plan's launches: each one's gradient bindings, piece table (uploaded), grid and
        /// vector width.
        fn prepared(&self, grads: &[CubeTensor]) -> Vec<Prepared> {
            let device = &grads[0].device;
            self.launches
                .iter()
                .map(|list| {
                    let (table, cubes) = piece_table(list, self.units);
                    let len = table.len();
                    let table = CubeBackend::int_from_data(TensorData::new(table, [len]), device);
                    Prepared {
                        bindings: list
                            .pieces
                            .iter()
                            .map(|p| grads[p.tensor].clone().into_buffer_arg())
                            .collect(),
                        table,
                        cube_count: grid(cubes),
                        vector_size: list.vector_size,
                    }
                })
                .collect()
        }
    }

    /// A launch ready to go.
    struct Prepared {
        bindings: Vec<BufferArg>,
        table: CubeTensor,
        cube_count: CubeCount,
        vector_size: usize,
    }

    /// Adds, for every gradient of `grads` (contiguous, of the plan's dtype), the histogram of
    /// the digit at `shift` to its segment (its slot) of `selection`.
    pub fn launch_histogram_each(
        grads: &[CubeTensor],
        selection: &CubeTensor,
        plan: &ListPlan,
        shift: u32,
    ) {
        plan.assert_slots_below(
            selection.meta.num_elements() / SELECTION_LEN,
            "a segment past the selection buffer",
        );
        let (window, high_shift) = pass_shape(&plan.client, plan.kind, shift);
        for launch in plan.prepared(grads) {
            count_launch();
            // SAFETY: a cube works only on its own piece, whose range lies within its
            // gradient's length at the launch's width (`list_launches`), and stops past the
            // table's cube count; segments are checked above, and histogram indices stay
            // within a segment (as the single-gradient histogram's).
            unsafe {
                histogram_each_kernel::launch_unchecked(
                    &plan.client,
                    launch.cube_count,
                    CubeDim::new_1d(plan.units),
                    plan.address_type,
                    launch.vector_size,
                    launch.bindings.into_iter().collect(),
                    launch.table.into_buffer_arg(),
                    selection.clone().into_buffer_arg(),
                    shift,
                    high_shift,
                    window,
                    plan.kind,
                    plan.storage,
                );
            }
        }
    }

    /// Masks every gradient of `grads` (contiguous, writable, of the plan's dtype) in place
    /// against `thresholds[slot]` (the threshold tensor of its dtype).
    pub fn launch_mask_each(grads: &[CubeTensor], thresholds: &CubeTensor, plan: &ListPlan) {
        plan.assert_slots_below(
            thresholds.meta.num_elements(),
            "a threshold slot past the thresholds",
        );
        for launch in plan.prepared(grads) {
            count_launch();
            // SAFETY: as `launch_histogram_each`; thresholds are read at checked slots.
            unsafe {
                mask_each_kernel::launch_unchecked(
                    &plan.client,
                    launch.cube_count,
                    CubeDim::new_1d(plan.units),
                    plan.address_type,
                    launch.vector_size,
                    launch.bindings.into_iter().collect(),
                    launch.table.into_buffer_arg(),
                    thresholds.clone().into_buffer_arg(),
                    plan.kind,
                    plan.storage,
                );
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn piece(tensor: usize, start: usize, end: usize, slot: u32) -> Piece {
            Piece {
                tensor,
                start,
                end,
                slot,
            }
        }

        #[test]
        fn pieces_cover_every_entry_once() {
            let launches = list_launches(&[10, 8, 3, 0], &[5, 6, 7, 8], 4, 128);
            assert_eq!(
                launches,
                vec![
                    ListLaunch {
                        vector_size: 4,
                        pieces: vec![piece(0, 0, 2, 5), piece(1, 0, 2, 6)],
                    },
                    ListLaunch {
                        vector_size: 1,
                        pieces: vec![piece(0, 8, 10, 5), piece(2, 0, 3, 7)],
                    },
                ]
            );
            // Scalar width: one piece per gradient; chunks of at most `max_pieces`.
            let launches = list_launches(&[5, 6, 7], &[0, 1, 2], 1, 2);
            assert_eq!(launches.len(), 2);
            assert_eq!(
                launches[0].pieces,
                vec![piece(0, 0, 5, 0), piece(1, 0, 6, 1)]
            );
            assert_eq!(launches[1].pieces, vec![piece(2, 0, 7, 2)]);
        }

        #[test]
        fn the_table_gives_each_piece_its_cubes() {
            let list = ListLaunch {
                vector_size: 4,
                pieces: vec![
                    piece(0, 0, 1, 3),
                    piece(1, 0, 256 * VECTORS_PER_UNIT * 3 + 1, 4),
                ],
            };
            let (table, cubes) = piece_table(&list, 256);
            assert_eq!(cubes, 1 + 4);
            assert_eq!(
                table,
                vec![
                    0,
                    0,
                    1,
                    3,
                    1,
                    0,
                    (256 * VECTORS_PER_UNIT * 3 + 1) as u32,
                    4,
                    5,
                    0,
                    0,
                    0
                ]
            );
            assert_eq!(piece_cubes(usize::MAX / 2, 256), MAX_PIECE_CUBES);
            assert!(matches!(grid(70_000), CubeCount::Static(MAX_GRID_X, 2, 1)));
        }
    }
}
