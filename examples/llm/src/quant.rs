//! Dequantisation of the GGUF tensor types a Llama model ships in, following ggml's block
//! definitions (`ggml-common.h`, `dequantize_row_*` in `ggml-quants.c`) bit for bit: the scale is
//! an IEEE half, each weight is one product (plus one sum for the `_1` types) in `f32`, in the
//! same order as ggml.
//!
//! | type | block | bytes | value |
//! |---|---:|---:|---|
//! | F32  | 1  | 4  | the float |
//! | F16  | 1  | 2  | the half |
//! | Q8_0 | 32 | 34 | `d * q`, `d: f16`, `q: i8[32]` |
//! | Q4_0 | 32 | 18 | `d * (nibble - 8)`, `d: f16`, 16 bytes of nibbles |
//! | Q4_1 | 32 | 20 | `d * nibble + m`, `d, m: f16`, 16 bytes of nibbles |
//! | Q5_0 | 32 | 22 | `d * (nibble + 16 * high bit - 16)`, `d: f16`, `qh: u32`, 16 bytes |
//! | Q5_1 | 32 | 24 | `d * (nibble + 16 * high bit) + m`, `d, m: f16`, `qh: u32`, 16 bytes |
//!
//! In the 4- and 5-bit types, byte `j` of the nibbles holds weight `j` in its low nibble and
//! weight `j + 16` in its high nibble.

use half::f16;

use crate::LlmError;

/// The tensor types this module dequantises (ggml's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// 4-bit, one half scale per 32 weights.
    Q4_0,
    /// 4-bit, half scale and minimum per 32 weights.
    Q4_1,
    /// 5-bit, one half scale per 32 weights.
    Q5_0,
    /// 5-bit, half scale and minimum per 32 weights.
    Q5_1,
    /// 8-bit, one half scale per 32 weights.
    Q8_0,
}

/// Weights per block of the quantised types.
pub const QK: usize = 32;

impl QuantType {
    /// The type with ggml's id `id` (`ggml_type`), if it is supported.
    pub fn from_ggml(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            _ => return None,
        })
    }

    /// (weights per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 => (1, 2),
            Self::Q4_0 => (QK, 18),
            Self::Q4_1 => (QK, 20),
            Self::Q5_0 => (QK, 22),
            Self::Q5_1 => (QK, 24),
            Self::Q8_0 => (QK, 34),
        }
    }

    /// Bytes holding `count` weights, or an error if `count` is not a whole number of blocks.
    pub fn bytes_for(self, count: usize) -> Result<usize, LlmError> {
        let (weights, bytes) = self.block();
        if !count.is_multiple_of(weights) {
            return Err(LlmError::Format(format!(
                "{count} weights of type {self:?} are not a whole number of {weights}-weight blocks"
            )));
        }
        Ok(count / weights * bytes)
    }
}

fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantises `count` weights of type `kind` from `bytes` (exactly their size).
pub fn dequantize(kind: QuantType, bytes: &[u8], count: usize) -> Result<Vec<f32>, LlmError> {
    let expected = kind.bytes_for(count)?;
    if bytes.len() != expected {
        return Err(LlmError::Format(format!(
            "{count} weights of type {kind:?} need {expected} bytes, got {}",
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    let (_, block_bytes) = kind.block();
    match kind {
        QuantType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        QuantType::F16 => out.extend(bytes.chunks_exact(2).map(|b| half_at(b, 0))),
        QuantType::Q8_0 => {
            for block in bytes.chunks_exact(block_bytes) {
                let d = half_at(block, 0);
                out.extend(block[2..].iter().map(|&q| d * f32::from(q as i8)));
            }
        }
        QuantType::Q4_0 | QuantType::Q4_1 => {
            for block in bytes.chunks_exact(block_bytes) {
                let d = half_at(block, 0);
                let (m, qs) = match kind {
                    QuantType::Q4_1 => (Some(half_at(block, 2)), &block[4..]),
                    _ => (None, &block[2..]),
                };
                let value = |nibble: u8| match m {
                    Some(m) => f32::from(nibble) * d + m,
                    None => f32::from(nibble as i8 - 8) * d,
                };
                out.extend(qs.iter().map(|&q| value(q & 0x0F)));
                out.extend(qs.iter().map(|&q| value(q >> 4)));
            }
        }
        QuantType::Q5_0 | QuantType::Q5_1 => {
            for block in bytes.chunks_exact(block_bytes) {
                let d = half_at(block, 0);
                let (m, rest) = match kind {
                    QuantType::Q5_1 => (Some(half_at(block, 2)), &block[4..]),
                    _ => (None, &block[2..]),
                };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..];
                // The fifth bit of weight `j` is bit `j` of `qh`.
                let value = |low: u8, j: usize| {
                    let q = low | ((((qh >> j) & 1) as u8) << 4);
                    match m {
                        Some(m) => f32::from(q) * d + m,
                        None => f32::from(q as i8 - 16) * d,
                    }
                };
                out.extend(qs.iter().enumerate().map(|(j, &q)| value(q & 0x0F, j)));
                out.extend(qs.iter().enumerate().map(|(j, &q)| value(q >> 4, j + 16)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn f32_and_f16_read_little_endian() {
        let mut bytes = Vec::new();
        for x in [1.5f32, -0.25, 3.0e-5] {
            bytes.extend(x.to_le_bytes());
        }
        assert_eq!(
            dequantize(QuantType::F32, &bytes, 3).unwrap(),
            [1.5, -0.25, 3.0e-5]
        );
        // 0x3C00 is 1.0, 0xC000 is -2.0, 0x0001 the smallest subnormal half.
        let halves = [0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00];
        assert_eq!(
            dequantize(QuantType::F16, &halves, 3).unwrap(),
            [1.0, -2.0, 2f32.powi(-24)]
        );
    }

    #[test]
    fn q8_0_is_scale_times_signed_byte() {
        let mut block = h(0.5).to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let out = dequantize(QuantType::Q8_0, &block, 32).unwrap();
        let expected: Vec<f32> = (0..32).map(|i| 0.5 * (i as f32 - 16.0)).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn q4_0_low_nibbles_first_then_high() {
        // Byte j: low nibble j % 16, high nibble 15 - j % 16.
        let mut block = h(0.25).to_vec();
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let out = dequantize(QuantType::Q4_0, &block, 32).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], 0.25 * (j as f32 - 8.0), "weight {j}");
            assert_eq!(out[j + 16], 0.25 * (7.0 - j as f32), "weight {}", j + 16);
        }
    }

    #[test]
    fn q4_1_adds_the_minimum_and_reads_two_blocks() {
        let mut bytes = Vec::new();
        for (d, m) in [(0.5f32, -1.0f32), (2.0, 3.0)] {
            bytes.extend(h(d));
            bytes.extend(h(m));
            bytes.extend((0..16u8).map(|j| j | (j << 4)));
        }
        let out = dequantize(QuantType::Q4_1, &bytes, 64).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], j as f32 * 0.5 - 1.0);
            assert_eq!(out[j + 16], j as f32 * 0.5 - 1.0);
            assert_eq!(out[32 + j], j as f32 * 2.0 + 3.0);
        }
        // A scale that is not exact in f32 arithmetic: the product is rounded once, then the sum.
        let d = f16::from_f32(0.1).to_f32();
        let m = f16::from_f32(-0.7).to_f32();
        let mut block = h(0.1).to_vec();
        block.extend(h(-0.7));
        block.extend([0x0Fu8; 16]);
        let out = dequantize(QuantType::Q4_1, &block, 32).unwrap();
        assert_eq!(out[0].to_bits(), (15.0f32 * d + m).to_bits());
    }

    #[test]
    fn q5_types_take_the_fifth_bit_from_qh() {
        // Every odd weight has its fifth bit set.
        let qh: u32 = 0xAAAA_AAAA;
        let mut q50 = h(1.0).to_vec();
        q50.extend(qh.to_le_bytes());
        q50.extend([0x21u8; 16]); // low nibble 1, high nibble 2
        let out = dequantize(QuantType::Q5_0, &q50, 32).unwrap();
        assert_eq!(out[0], 1.0 - 16.0);
        assert_eq!(out[1], 17.0 - 16.0);
        assert_eq!(out[16], 2.0 - 16.0);
        assert_eq!(out[17], 18.0 - 16.0);

        let mut q51 = h(0.5).to_vec();
        q51.extend(h(1.0));
        q51.extend(qh.to_le_bytes());
        q51.extend([0x21u8; 16]);
        let out = dequantize(QuantType::Q5_1, &q51, 32).unwrap();
        assert_eq!(out[0], 0.5 + 1.0);
        assert_eq!(out[1], 17.0 * 0.5 + 1.0);
        assert_eq!(out[31], 18.0 * 0.5 + 1.0);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(dequantize(QuantType::Q4_1, &[0; 20], 31).is_err());
        assert!(dequantize(QuantType::Q8_0, &[0; 33], 32).is_err());
        assert_eq!(QuantType::from_ggml(3), Some(QuantType::Q4_1));
        assert_eq!(QuantType::from_ggml(12), None);
    }
}
