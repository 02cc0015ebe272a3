//! The one launcher of the kernels that run over a gradient's entries (mask, select, counts,
//! random mask and counts, histogram): a [`LaunchPlan`] picks the vector width and splits the
//! entries into parts, and [`LaunchPlan::launch`] launches one generic kernel per part, which
//! runs the [`PartKernel`] code of the kernel family it is given.
//!
//! Each family ([`PlannedKernel`]) lives in its own file beside the function that builds its
//! arguments; this file holds the launch loop and its one `unsafe` block, which rests on the
//! promise each family makes by implementing the unsafe trait.

#[cfg(not(gmt_cuda_codegen))]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(gmt_cuda_codegen))]
use burn::backend::cubecl::dtype_to_storage_type;
#[cfg(not(gmt_cuda_codegen))]
use burn_cubecl::tensor::CubeTensor;
#[cfg(not(gmt_cuda_codegen))]
use cubecl::calculate_cube_count_elemwise;
#[cfg(not(gmt_cuda_codegen))]
use cubecl::client::Client;
use cubecl::prelude::*;

use super::key::KeyKind;

/// How the units of a kernel cover the positions of their part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grid {
    /// One unit per position; units past the end do nothing.
    Elementwise,
    /// A grid-stride loop over the positions by at most [`MAX_REDUCTION_CUBES`] cubes
    /// ([`reduction_grid`]), for kernels that sum per cube before one global atomic each.
    Reduction,
}

/// What one unit of a kernel family does for the element type `F` in vectors of `N` entries.
#[cube]
pub trait PartKernel<F: Float, N: Size>: 'static + Send + Sync {
    /// The buffers, scalars and comptime options of the kernel (a `#[derive(CubeLaunch)]`
    /// struct).
    type Args: LaunchArg;

    /// Runs this unit over the positions `start..end` of a part, counted in vectors, on keys of
    /// the dtype `kind`.
    fn run(args: &mut Self::Args, start: usize, end: usize, #[comptime] kind: KeyKind);
}

/// A kernel family [`LaunchPlan::launch`] runs: its arguments and its unit code for every
/// element type and vector width.
///
/// # Safety
///
/// An implementation promises that a launch of [`plan_kernel`] with it, over a part
/// `start..end` of a plan of `len` entries, with the grid [`Self::GRID`] gives it and with
/// arguments as the family's launch function builds them, reads and writes its vector buffers
/// (of the plan's `len` entries each) only at positions in `start..end`, every other buffer
/// only within the length that launch function gives it and shared memory within what it
/// allocates, and ends every loop.
pub unsafe trait PlannedKernel: 'static + Send + Sync {
    /// [`PartKernel::Args`] of every element type and vector width.
    type Args<F: Float, N: Size>: LaunchArg;
    /// The unit code.
    type Part<F: Float, N: Size>: PartKernel<F, N, Args = Self::Args<F, N>>;
    /// How units cover a part.
    const GRID: Grid;
}

/// One part of a plan for the family `K`: `K`'s unit code on positions `start..end`.
#[cube(launch_unchecked, create_dummy_kernel, address_type = "dynamic")]
pub fn plan_kernel<F: Float, N: Size, K: PlannedKernel>(
    args: &mut K::Args<F, N>,
    start: usize,
    end: usize,
    #[comptime] kind: KeyKind,
    #[define(F)] _dtype: ElemType,
) {
    K::Part::<F, N>::run(args, start, end, kind);
}

/// The launch arguments of the family `K` as [`LaunchPlan::launch`] passes them.
pub type PlannedArgs<K> = RuntimeArg<<K as PlannedKernel>::Args<plan_kernel::F, plan_kernel::N>>;

/// How one operation covers a contiguous run of `len` entries of one dtype.
#[cfg(not(gmt_cuda_codegen))]
pub struct LaunchPlan {
    client: Client,
    /// Entries covered.
    pub len: usize,
    /// Entries per vector of the main launch.
    vector_size: usize,
    /// The dtype, as the kernels key it.
    pub kind: KeyKind,
    /// The dtype, as CubeCL stores it.
    pub storage: ElemType,
    address_type: AddressType,
}

/// Positions `start..end`, counted in vectors of `vector_size` entries.
#[cfg(not(gmt_cuda_codegen))]
#[derive(Debug, PartialEq, Eq)]
struct Part {
    vector_size: usize,
    start: usize,
    end: usize,
}

/// The parts of `len` entries read `vector_size` at a time: the whole vectors, then the scalar
/// tail (one entry a position, counted from the first entry), each only if not empty.
#[cfg(not(gmt_cuda_codegen))]
fn parts(len: usize, vector_size: usize) -> Vec<Part> {
    let vectors = len / vector_size;
    let tail = len % vector_size;
    let mut parts = Vec::with_capacity(2);
    if vectors > 0 {
        parts.push(Part {
            vector_size,
            start: 0,
            end: vectors,
        });
    }
    if tail > 0 {
        parts.push(Part {
            vector_size: 1,
            start: len - tail,
            end: len,
        });
    }
    parts
}

#[cfg(not(gmt_cuda_codegen))]
impl LaunchPlan {
    /// The plan for `len` entries of `tensors` (contiguous, one dtype), or `None` when the
    /// dtype has no kernel (the caller falls back to the host). The vector width is the widest
    /// the device reads best for the dtype that fits in `len`.
    pub fn new(tensors: &[&CubeTensor], len: usize) -> Option<Self> {
        let first = tensors[0];
        let kind = KeyKind::of(first.dtype)?;
        let vector_size = first
            .client
            .io_optimized_vector_sizes(first.dtype.size())
            .find(|&v| v <= len)
            .unwrap_or(1);
        let address_type = tensors
            .iter()
            .map(|t| t.required_address_type())
            .max()
            .unwrap_or_default();
        Some(Self {
            client: first.client.clone(),
            len,
            vector_size,
            kind,
            storage: dtype_to_storage_type(first.dtype),
            address_type,
        })
    }

    /// Launches the family `K` over the plan's entries: a vectorized launch over the whole
    /// vectors, then a scalar one over the tail, if any. `args` builds the arguments of each
    /// launch (buffers are handed over per launch).
    pub fn launch<K: PlannedKernel>(&self, args: impl Fn() -> PlannedArgs<K>) {
        for part in parts(self.len, self.vector_size) {
            let units = part.end - part.start;
            let (cube_count, cube_dim) = match K::GRID {
                Grid::Elementwise => {
                    let cube_dim = CubeDim::new(&self.client, units);
                    let cube_count = calculate_cube_count_elemwise(&self.client, units, cube_dim);
                    (cube_count, cube_dim)
                }
                Grid::Reduction => reduction_grid(&self.client, units),
            };
            count_launch();
            // SAFETY: `K` promises (`PlannedKernel`) to stay within `part.start..part.end`, a
            // range of the plan's `len` entries at the part's vector width, within the lengths
            // of the buffers its launch function builds, and to end its loops.
            unsafe {
                plan_kernel::launch_unchecked::<K>(
                    &self.client,
                    cube_count,
                    cube_dim,
                    self.address_type,
                    part.vector_size,
                    args(),
                    part.start,
                    part.end,
                    self.kind,
                    self.storage,
                );
            }
        }
    }
}

/// Kernel launches of this crate so far, in the whole process: each launch site adds one
/// ([`count_launch`]) right before it launches. Burn's own launches (copies, fills) are not
/// counted. Process-wide: a `Fusion` device launches from the thread that runs its queue.
#[cfg(not(gmt_cuda_codegen))]
static LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// Counts one kernel launch of this crate (every launch site calls it).
#[cfg(not(gmt_cuda_codegen))]
pub fn count_launch() {
    LAUNCHES.fetch_add(1, Ordering::Relaxed);
}

/// The kernel launches of this crate so far, in the whole process ([`count_launch`]).
#[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
#[cfg(not(gmt_cuda_codegen))]
pub fn launches() -> u64 {
    LAUNCHES.load(Ordering::Relaxed)
}

/// Checks that `threshold` has the entry the threshold kernels read.
#[cfg(not(gmt_cuda_codegen))]
pub fn assert_threshold(threshold: &CubeTensor) {
    assert!(
        threshold.meta.num_elements() > 0,
        "gradient mask: an empty threshold tensor"
    );
}

/// Units per cube of the grid-stride reductions.
#[cfg(not(gmt_cuda_codegen))]
const REDUCTION_UNITS: u32 = 256;
/// Vectors per unit below which a reduction launches fewer cubes (each cube pays a fixed
/// cost: clearing and merging its shared counters).
#[cfg(not(gmt_cuda_codegen))]
const VECTORS_PER_UNIT: usize = 16;
/// At most this many cubes per reduction; the grid-stride loop covers the rest.
#[cfg(not(gmt_cuda_codegen))]
const MAX_REDUCTION_CUBES: usize = 1024;

/// Cubes and units of a grid-stride reduction over `vectors` vectors.
#[cfg(not(gmt_cuda_codegen))]
pub fn reduction_grid(client: &Client, vectors: usize) -> (CubeCount, CubeDim) {
    let units = REDUCTION_UNITS
        .min(client.properties().hardware.max_units_per_cube)
        .max(1);
    let cubes = reduction_cubes(vectors, units);
    (CubeCount::new_1d(cubes as u32), CubeDim::new_1d(units))
}

/// Cubes of `units` units each for a reduction over `vectors` vectors: one per
/// [`VECTORS_PER_UNIT`] vectors a unit, between 1 and [`MAX_REDUCTION_CUBES`].
#[cfg(not(gmt_cuda_codegen))]
fn reduction_cubes(vectors: usize, units: u32) -> usize {
    vectors
        .div_ceil(units as usize * VECTORS_PER_UNIT)
        .clamp(1, MAX_REDUCTION_CUBES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(vector_size: usize, start: usize, end: usize) -> Part {
        Part {
            vector_size,
            start,
            end,
        }
    }

    #[test]
    fn parts_cover_every_entry_once() {
        // Whole vectors, then the tail counted in entries from where the vectors end.
        assert_eq!(parts(10, 4), vec![part(4, 0, 2), part(1, 8, 10)]);
        assert_eq!(parts(8, 4), vec![part(4, 0, 2)]);
        assert_eq!(parts(3, 1), vec![part(1, 0, 3)]);
        assert_eq!(parts(3, 4), vec![part(1, 0, 3)]);
        assert_eq!(parts(0, 4), vec![]);
    }

    #[test]
    fn reductions_launch_fewer_cubes_on_small_inputs() {
        assert_eq!(reduction_cubes(1, 256), 1);
        assert_eq!(reduction_cubes(256 * 16, 256), 1);
        assert_eq!(reduction_cubes(256 * 16 + 1, 256), 2);
        assert_eq!(reduction_cubes(usize::MAX / 2, 256), MAX_REDUCTION_CUBES);
        assert_eq!(reduction_cubes(64, 1), 4);
    }
}
