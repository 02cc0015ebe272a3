//! The device steps of a selection (CUDA, ROCm, wgpu: the backends whose selection stays in
//! their own memory): a selection buffer collects the histograms of every gradient, a digit
//! step picks the digit and clears it, and nothing is read back in between.

use burn::backend::{Dispatch, DispatchTensor};
use burn::tensor::{DType, Int, Tensor};

use crate::buffer::{SELECTION_LEN, SELECTION_STATE_LEN, radix_passes};
use crate::element::{inf_key, key_bits};
use crate::{GradList, MaskOps};

/// Runs the device steps of `members.len()` selections made together (at most
/// [`SELECTION_MAX_SEGMENTS`](crate::buffer::SELECTION_MAX_SEGMENTS), all on one device):
/// selection `s` seeks rank `ranks[s]` among the gradients `members[s]` and has segment `s` of
/// the returned selection buffer. Each pass counts every gradient into its segment, then one
/// digit step serves every segment.
pub(crate) fn device_steps(
    members: &[Vec<&DispatchTensor>],
    ranks: Vec<u64>,
    dtype: DType,
) -> DispatchTensor {
    let bits = key_bits(dtype).expect("selection on a supported float dtype");
    let inf = inf_key(dtype).expect("selection on a supported float dtype");
    let (grads, segments): (Vec<DispatchTensor>, Vec<u32>) = members
        .iter()
        .enumerate()
        .flat_map(|(segment, grads)| grads.iter().map(move |&g| (g.clone(), segment as u32)))
        .unzip();
    let mut selection = <Dispatch as MaskOps>::radix_select_start(members[0][0], ranks);
    for pass in radix_passes(bits, inf) {
        // Every gradient of every selection in one batched operation (one launch on CubeCL).
        selection = <Dispatch as MaskOps>::radix_select_count_each(
            GradList::new(grads.clone()),
            selection,
            pass.shift,
            segments.clone(),
        );
        selection = <Dispatch as MaskOps>::radix_select_digit(selection, pass.inf_digit);
    }
    selection
}

/// The state words of the `segments` segments of a selection buffer, segment after segment
/// (4 words each), in a tensor of their own (`+ 0` materialises the slice, one launch), so
/// that statistics waiting to be read do not keep the buffer's histograms alive.
pub(crate) fn segment_states(selection: DispatchTensor, segments: usize) -> Tensor<1, Int> {
    Tensor::<1, Int>::from_dispatch(selection)
        .reshape([segments, SELECTION_LEN])
        .slice([0..segments, 0..SELECTION_STATE_LEN])
        .add_scalar(0)
        .reshape([segments * SELECTION_STATE_LEN])
}
