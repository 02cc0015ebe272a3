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
        dequantize(raw.kind, &raw.bytes, raw.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
