//! Reading a GGUF file: metadata and tensors, dequantised to `f32`.
//!
//! The container is parsed by [`gguf_rs_lib`] (pure Rust, reads and writes GGUF v3, checks
//! descriptor and payload ranges, light dependencies); this module only maps its values to what
//! the Llama loader needs and dequantises the payloads with [`crate::quant`] (that crate names
//! the quantisation types but does not dequantise them).
//!
//! GGUF lists a tensor's dimensions innermost first: a matrix listed `[576, 192]` has 192 rows of
//! 576 values in row-major order.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;

use gguf_rs_lib::format::metadata::MetadataValue;
use gguf_rs_lib::prelude::{GGUFFileReader, Metadata};

use crate::LlmError;
use crate::quant::{QuantType, dequantize};

/// One tensor as stored: dimensions (innermost first), type and raw bytes.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// Dimensions, innermost first (GGUF order).
    pub dims: Vec<usize>,
    /// Storage type.
    pub kind: QuantType,
    /// The payload, exactly `kind.bytes_for(count)` bytes.
    pub bytes: Vec<u8>,
}

impl RawTensor {
    /// Number of weights.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Whether the tensor holds no weight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A GGUF file held in memory: its metadata and every tensor.
pub struct Gguf {
    metadata: Metadata,
    tensors: HashMap<String, RawTensor>,
}

/// Any integer value, signed or not (writers differ in the integer types they pick).
fn integer(value: &MetadataValue) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_u64().and_then(|v| i64::try_from(v).ok()))
}

fn gguf_error(context: &str, error: impl std::fmt::Display) -> LlmError {
    LlmError::Format(format!("{context}: {error}"))
}

impl Gguf {
    /// Reads the GGUF file at `path`.
    pub fn open(path: &Path) -> Result<Self, LlmError> {
        let file = std::fs::File::open(path).map_err(|source| LlmError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::read(std::io::BufReader::new(file))
            .map_err(|e| LlmError::Format(format!("{}: {e}", path.display())))
    }

    /// Reads a GGUF file from any seekable reader (a file, or bytes in a cursor).
    pub fn read<R: Read + Seek>(reader: R) -> Result<Self, LlmError> {
        let mut reader =
            GGUFFileReader::new(reader).map_err(|e| gguf_error("not a GGUF file", e))?;
        let infos: Vec<(String, Vec<usize>, u32)> = reader
            .tensor_infos()
            .iter()
            .map(|info| {
                (
                    info.name().to_string(),
                    info.shape().dims().iter().map(|&d| d as usize).collect(),
                    info.tensor_type() as u32,
                )
            })
            .collect();
        let mut tensors = HashMap::with_capacity(infos.len());
        for (name, dims, type_id) in infos {
            let kind = QuantType::from_ggml(type_id).ok_or_else(|| {
                LlmError::Format(format!(
                    "tensor `{name}` has ggml type {type_id}, which is not supported (F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)"
                ))
            })?;
            let data = reader
                .load_tensor_data(&name)
                .map_err(|e| gguf_error(&format!("tensor `{name}`"), e))?
                .ok_or_else(|| LlmError::Format(format!("tensor `{name}` has no data")))?;
            let bytes = data.into_owned();
            let count: usize = dims.iter().product();
            if bytes.len() != kind.bytes_for(count)? {
                return Err(LlmError::Format(format!(
                    "tensor `{name}`: {} bytes for {count} weights of type {kind:?}",
                    bytes.len()
                )));
            }
            tensors.insert(name, RawTensor { dims, kind, bytes });
        }
        Ok(Self {
            metadata: reader.metadata().clone(),
            tensors,
        })
    }

    fn value(&self, key: &str) -> Result<&MetadataValue, LlmError> {
        self.metadata
            .get(key)
            .ok_or_else(|| LlmError::Format(format!("metadata key `{key}` is missing")))
    }

    /// An unsigned integer metadata value.
    pub fn uint(&self, key: &str) -> Result<usize, LlmError> {
        integer(self.value(key)?)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| {
                LlmError::Format(format!("metadata `{key}` is not a non-negative integer"))
            })
    }

    /// A float metadata value.
    pub fn float(&self, key: &str) -> Result<f64, LlmError> {
        self.value(key)?
            .as_f64()
            .ok_or_else(|| LlmError::Format(format!("metadata `{key}` is not a number")))
    }

    /// A string metadata value.
    pub fn string(&self, key: &str) -> Result<&str, LlmError> {
        self.value(key)?
            .as_str()
            .ok_or_else(|| LlmError::Format(format!("metadata `{key}` is not a string")))
    }

    /// Whether the metadata has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.metadata.contains_key(key)
    }

    fn array(&self, key: &str) -> Result<&[MetadataValue], LlmError> {
        match self.value(key)? {
            MetadataValue::Array(array) => Ok(&array.values),
            _ => Err(LlmError::Format(format!(
                "metadata `{key}` is not an array"
            ))),
        }
    }

    /// An array of strings (the vocabulary, the merges).
    pub fn strings(&self, key: &str) -> Result<Vec<String>, LlmError> {
        self.array(key)?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| LlmError::Format(format!("metadata `{key}` holds a non-string")))
            })
            .collect()
    }

    /// An array of integers (the token types).
    pub fn ints(&self, key: &str) -> Result<Vec<i64>, LlmError> {
        self.array(key)?
            .iter()
            .map(|v| {
                integer(v).ok_or_else(|| {
                    LlmError::Format(format!("metadata `{key}` holds a non-integer"))
                })
            })
            .collect()
    }

    /// The tensor named `name`, as stored.
    pub fn raw(&self, name: &str) -> Result<&RawTensor, LlmError> {
        self.tensors
            .get(name)
            .ok_or_else(|| LlmError::Format(format!("tensor `{name}` is missing")))
    }

    /// Whether the file has a tensor named `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name` dequantised, checked to have `dims` (innermost first).
    pub fn tensor(&self, name: &str, dims: &[usize]) -> Result<Vec<f32>, LlmError> {
        let raw = self.raw(name)?;
        if raw.dims != dims {
            return Err(LlmError::Format(format!(
                "tensor `{name}` has dimensions {:?} (innermost first), expected {dims:?}",
                raw.dims
            )));
        }
        let values = dequantize(raw.kind, &raw.bytes, raw.len())?;
        // A corrupted scale or value is often NaN or infinite: refuse it rather than load it.
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(LlmError::Format(format!(
                "tensor `{name}` holds a non-finite weight at index {i} ({})",
                values[i]
            )));
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QK;
    use crate::testing::{self, tiny_model_file};

    #[test]
    fn metadata_and_tensors_read_back_from_a_written_file() {
        let (gguf, weights, _) = tiny_model_file(7);
        assert_eq!(gguf.string("general.architecture").unwrap(), "llama");
        assert_eq!(gguf.uint("llama.block_count").unwrap(), testing::LAYERS);
        assert_eq!(gguf.float("llama.rope.freq_base").unwrap(), testing::THETA);
        assert_eq!(
            gguf.strings("tokenizer.ggml.tokens").unwrap().len(),
            weights.vocab
        );
        let types = gguf.ints("tokenizer.ggml.token_type").unwrap();
        assert_eq!(&types[..4], &[3, 3, 3, 1]);
        // F16 embedding and F32 matrices come back as the values written.
        let embd = gguf.raw("token_embd.weight").unwrap();
        assert_eq!(embd.kind, QuantType::F16);
        assert_eq!(embd.dims, [testing::D, weights.vocab]);
        let dims = [testing::D, weights.vocab];
        assert_eq!(
            gguf.tensor("token_embd.weight", &dims).unwrap(),
            weights.get("token_embd.weight")
        );
        let q = "blk.1.attn_q.weight";
        assert_eq!(
            gguf.tensor(q, &[testing::D, testing::D]).unwrap(),
            weights.get(q)
        );
    }

    #[test]
    fn missing_or_mismatched_entries_are_named_in_the_error() {
        let (gguf, _, _) = tiny_model_file(8);
        let err = gguf.uint("llama.no_such_key").unwrap_err().to_string();
        assert!(err.contains("llama.no_such_key"), "{err}");
        let err = gguf.uint("general.architecture").unwrap_err().to_string();
        assert!(err.contains("not a non-negative integer"), "{err}");
        let err = gguf
            .tensor("output_norm.weight", &[3])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("output_norm.weight") && err.contains("[16]"),
            "{err}"
        );
        assert!(gguf.raw("output.weight").is_err());
        assert!(Gguf::read(std::io::Cursor::new(b"not a gguf file".to_vec())).is_err());
    }

    /// The corruption tests' file: metadata and one tensor of each storage type but F16, with
    /// random (finite) quantised blocks.
    fn corruptible_gguf() -> (Vec<u8>, Vec<(&'static str, usize)>) {
        use gguf_rs_lib::format::metadata::MetadataValue;
        use gguf_rs_lib::prelude::GGUFBuilder;
        use gguf_rs_lib::tensor::TensorType;
        let mut state = 0x5EED_u64;
        let mut byte = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        };
        let scale = |b: &mut dyn FnMut() -> u8| {
            half::f16::from_f32(0.01 + f32::from(b()) / 2048.0).to_le_bytes()
        };
        let mut block = |kind: QuantType| -> Vec<u8> {
            let (_, size) = kind.block();
            let mut out = Vec::with_capacity(size);
            let scales = match kind {
                QuantType::Q4_1 | QuantType::Q5_1 => 2,
                _ => 1,
            };
            for _ in 0..scales {
                out.extend(scale(&mut byte));
            }
            while out.len() < size {
                out.push(byte());
            }
            out
        };
        let tensors: Vec<(&str, QuantType, TensorType, usize)> = vec![
            ("a.f32", QuantType::F32, TensorType::F32, 8),
            ("b.q4_0", QuantType::Q4_0, TensorType::Q4_0, 64),
            ("c.q4_1", QuantType::Q4_1, TensorType::Q4_1, 64),
            ("d.q5_0", QuantType::Q5_0, TensorType::Q5_0, 32),
            ("e.q5_1", QuantType::Q5_1, TensorType::Q5_1, 32),
            ("f.q8_0", QuantType::Q8_0, TensorType::Q8_0, 64),
        ];
        let mut builder = GGUFBuilder::new()
            .add_metadata(
                "general.architecture",
                MetadataValue::String("llama".into()),
            )
            .add_metadata("llama.block_count", MetadataValue::U32(1));
        for &(name, kind, tensor_type, count) in &tensors {
            let bytes: Vec<u8> = match kind {
                QuantType::F32 => (0..count)
                    .flat_map(|i| (i as f32 * 0.25 - 1.0).to_le_bytes())
                    .collect(),
                _ => (0..count / QK).flat_map(|_| block(kind)).collect(),
            };
            builder = builder
                .add_tensor(name.to_string(), vec![count as u64], tensor_type, bytes)
                .unwrap();
        }
        let bytes = builder.build_to_bytes().unwrap().0;
        (bytes, tensors.iter().map(|t| (t.0, t.3)).collect())
    }

    /// Every tensor of a file, dequantised, or the first error.
    fn load(bytes: &[u8], tensors: &[(&str, usize)]) -> Result<Vec<Vec<f32>>, LlmError> {
        let gguf = Gguf::read(std::io::Cursor::new(bytes.to_vec()))?;
        tensors
            .iter()
            .map(|&(name, count)| gguf.tensor(name, &[count]))
            .collect()
    }

    mod corruption {
        use super::*;
        use proptest::prelude::*;

        /// Where the tensor payloads start: the first tensor's (the F32 one's) known bytes.
        fn data_start(bytes: &[u8], _tensors: &[(&str, usize)]) -> usize {
            let first: Vec<u8> = (0..8)
                .flat_map(|i| (i as f32 * 0.25 - 1.0).to_le_bytes())
                .collect();
            bytes
                .windows(first.len())
                .rposition(|w| w == first)
                .expect("the F32 payload is in the file")
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(96))]

            /// A file cut short is an error, never a panic (or, cut in trailing padding, the
            /// same tensors).
            #[test]
            fn a_truncated_file_is_an_error(cut in 0.0f64..1.0) {
                let (bytes, tensors) = corruptible_gguf();
                let original = load(&bytes, &tensors).unwrap();
                let cut = (cut * bytes.len() as f64) as usize;
                match load(&bytes[..cut], &tensors) {
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                    Ok(loaded) => prop_assert_eq!(loaded, original),
                }
            }

            /// A flipped byte anywhere: an error with a message, or tensors that read without
            /// a panic or an out-of-range access. A flip in a tensor's payload changes at most
            /// the weights of the block it falls in (no checksum can tell a changed weight from
            /// a trained one), or is refused when it makes a weight non-finite.
            #[test]
            fn a_flipped_byte_is_an_error_or_a_bounded_change(at in 0.0f64..1.0, mask in 1u8..=255) {
                let (mut bytes, tensors) = corruptible_gguf();
                let original = load(&bytes, &tensors).unwrap();
                let start = data_start(&bytes, &tensors);
                let at = ((at * bytes.len() as f64) as usize).min(bytes.len() - 1);
                bytes[at] ^= mask;
                match load(&bytes, &tensors) {
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                    Ok(loaded) if at >= start => {
                        let changed: Vec<(usize, usize)> = loaded
                            .iter()
                            .zip(&original)
                            .enumerate()
                            .flat_map(|(t, (a, b))| {
                                a.iter().zip(b).enumerate()
                                    .filter(|(_, (x, y))| x != y)
                                    .map(move |(i, _)| (t, i / QK))
                                    .collect::<Vec<_>>()
                            })
                            .collect();
                        // One tensor, one block (the F32 tensor: one weight).
                        prop_assert!(changed.windows(2).all(|w| w[0] == w[1]), "{changed:?}");
                    }
                    Ok(loaded) => {
                        for t in &loaded {
                            prop_assert!(t.iter().all(|v| v.is_finite()));
                        }
                    }
                }
            }
        }

        #[test]
        fn a_non_finite_scale_is_refused_with_the_tensor_named() {
            let (mut bytes, tensors) = corruptible_gguf();
            let start = data_start(&bytes, &tensors);
            // The first Q4_0 block's scale (after the 8 F32 weights, padded to 32 bytes) set
            // to an f16 infinity.
            let at = start + 32;
            bytes[at..at + 2].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
            let err = load(&bytes, &tensors).unwrap_err().to_string();
            assert!(
                err.contains("b.q4_0") && err.contains("non-finite"),
                "{err}"
            );
        }
    }
}
