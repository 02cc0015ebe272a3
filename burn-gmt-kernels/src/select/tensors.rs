//! Gradients on any backend as the parts of a host selection ([`KeyParts`]): each read
//! through [`MaskOps`] on its own device, only counts and a few keys read back, one read per
//! device for all of them; and the thresholds a host selection leaves on their devices.

use burn::backend::{Dispatch, DispatchTensor, TensorMetadata};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::MaskOps;
use crate::element::{inf_key, key_bits};
use crate::host::{BracketScan, KeyBracket, KeyParts};
use crate::stats::read_per_device;

/// Gradients of one dtype, on one device or several.
impl KeyParts for [DispatchTensor] {
    type Key = u64;

    fn sizes(&self) -> Vec<u64> {
        self.iter()
            .map(|g| g.shape().num_elements() as u64)
            .collect()
    }

    fn key_bits(&self) -> u32 {
        key_bits(self[0].dtype()).expect("selection on a supported float dtype")
    }

    fn inf_key(&self) -> u64 {
        inf_key(self[0].dtype()).expect("selection on a supported float dtype")
    }

    fn sample(&self, counts: &[u64]) -> Vec<u64> {
        let drawn = self
            .iter()
            .zip(counts)
            .filter(|(_, count)| **count > 0)
            .map(|(g, &count)| {
                Tensor::from_dispatch(<Dispatch as MaskOps>::abs_key_sample(g, count))
            })
            .collect();
        read_words(drawn).into_iter().flatten().collect()
    }

    fn scan(&self, bracket: KeyBracket, caps: &[u64]) -> Vec<BracketScan<u64>> {
        let scanned = self
            .iter()
            .zip(caps)
            .map(|(g, &cap)| {
                let words =
                    <Dispatch as MaskOps>::abs_key_bracket(g, bracket.lo, bracket.last, cap);
                Tensor::from_dispatch(words)
            })
            .collect();
        read_words(scanned)
            .iter()
            .map(|words| BracketScan::from_words(words))
            .collect()
    }

    fn histograms(&self, shift: u32, prefix: u64) -> Vec<Vec<u64>> {
        let hists = self
            .iter()
            .map(|g| {
                Tensor::from_dispatch(<Dispatch as MaskOps>::abs_key_histogram(g, shift, prefix))
            })
            .collect();
        read_words(hists)
    }
}

/// Counter tensors (`I64` or `U32`) read back as `u64` words, one read per device.
fn read_words(tensors: Vec<Tensor<1, Int>>) -> Vec<Vec<u64>> {
    read_per_device::<Int, i64>(tensors)
        .into_iter()
        .map(|words| words.into_iter().map(|w| w as u64).collect())
        .collect()
}

/// A one-entry tensor of `dtype` holding `value` (exact when `value` comes from that dtype).
pub fn threshold_tensor(value: f64, dtype: DType, device: &Device) -> DispatchTensor {
    Tensor::<1>::from_data(TensorData::from([value]), (device, dtype)).into_dispatch()
}

/// A threshold of `value` for each of `grads`: one one-entry tensor per device they live on.
pub(crate) fn thresholds_on_devices(
    grads: &[DispatchTensor],
    value: f64,
    dtype: DType,
) -> Vec<DispatchTensor> {
    let mut per_device: Vec<(Device, DispatchTensor)> = Vec::new();
    grads
        .iter()
        .map(|grad| {
            let device: Device = grad.device().into();
            if let Some((_, t)) = per_device.iter().find(|(d, _)| *d == device) {
                return t.clone();
            }
            let t = threshold_tensor(value, dtype, &device);
            per_device.push((device, t.clone()));
            t
        })
        .collect()
}
