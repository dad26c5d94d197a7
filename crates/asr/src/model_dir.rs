//! Reading a Whisper model directory in either layout users have: CTranslate2 /
//! faster-whisper (`model.bin`, `config.json`, `tokenizer.json`, `vocabulary.txt`) or
//! Hugging Face (`model.safetensors`, `config.json`, `tokenizer.json`). Both end up as
//! float32 tensors under the Hugging Face names, which is what [`crate::model`] loads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

/// CTranslate2 binary format version this reader understands (what its converters have
/// written since 2022; older versions lay variables out differently).
const CT2_BINARY_VERSION: u32 = 6;

/// Largest tensor rank a CTranslate2 variable may declare here; Whisper uses up to 3
/// (convolution kernels), so more means a corrupt or foreign file.
const CT2_MAX_RANK: usize = 4;

/// Why a model directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file of the model could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The directory holds neither `model.bin` nor `model.safetensors`.
    #[error("{0} holds no model.bin (CTranslate2) or model.safetensors (Hugging Face); run scripts/fetch-model.sh")]
    NoWeights(PathBuf),
    /// The weights file is not what it claims to be.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor the model needs is missing or has the wrong shape.
    #[error("tensor {name}: {reason}")]
    Tensor {
        /// Hugging Face name of the tensor.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `tokenizer.json` or `config.json` is unusable.
    #[error("{path}: {reason}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// candle failed while building a tensor.
    #[error("tensor library: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Which layout a model directory uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// CTranslate2 / faster-whisper: `model.bin`.
    CTranslate2,
    /// Hugging Face transformers: `model.safetensors`.
    HuggingFace,
}

/// The raw contents of a model directory: tensors under Hugging Face names plus what the
/// decoder needs to know that is not a tensor.
#[derive(Debug)]
pub(crate) struct RawModel {
    pub(crate) layout: Layout,
    pub(crate) tensors: HashMap<String, Tensor>,
    /// Attention heads of the encoder and of the decoder.
    pub(crate) encoder_heads: usize,
    pub(crate) decoder_heads: usize,
    /// Tokens never to emit.
    pub(crate) suppress: Vec<u32>,
    /// Tokens never to emit as the first token (a blank, end of text).
    pub(crate) suppress_begin: Vec<u32>,
}

/// Detects the layout of `dir`.
pub(crate) fn detect_layout(dir: &Path) -> Result<Layout, ModelError> {
    if dir.join("model.bin").is_file() {
        Ok(Layout::CTranslate2)
    } else if dir.join("model.safetensors").is_file() {
        Ok(Layout::HuggingFace)
    } else {
        Err(ModelError::NoWeights(dir.to_path_buf()))
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, ModelError> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| ModelError::Json {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Loads the tensors and settings of the model in `dir`.
pub(crate) fn load(dir: &Path) -> Result<RawModel, ModelError> {
    match detect_layout(dir)? {
        Layout::CTranslate2 => load_ct2(dir),
        Layout::HuggingFace => load_hf(dir),
    }
}

fn id_list(value: Option<&serde_json::Value>) -> Option<Vec<u32>> {
    value?.as_array().map(|items| {
        items
            .iter()
            .filter_map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect()
    })
}

/// Whisper's own begin-suppression (a blank, end of text) when a model folder names none.
const DEFAULT_SUPPRESS_BEGIN: [u32; 2] = [220, 50256];

fn load_hf(dir: &Path) -> Result<RawModel, ModelError> {
    let path = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
    let mut tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_dtype(DType::F32)?)))
        .collect::<Result<_, candle_core::Error>>()?;
    // Some exports prefix nothing, some prefix `model.`; normalise to `model.`.
    if !tensors.keys().any(|k| k.starts_with("model.")) {
        tensors = tensors
            .into_iter()
            .map(|(k, v)| (format!("model.{k}"), v))
            .collect();
    }
    let config = read_json(&dir.join("config.json"))?;
    let heads = |key: &str| {
        config
            .get(key)
            .and_then(|v| v.as_u64())
            .map(|n| n as usize)
            .ok_or_else(|| ModelError::Json {
                path: dir.join("config.json"),
                reason: format!("no {key}"),
            })
    };
    let generation = read_json(&dir.join("generation_config.json")).ok();
    let pick =
        |key: &str| id_list(config.get(key)).or_else(|| id_list(generation.as_ref()?.get(key)));
    Ok(RawModel {
        layout: Layout::HuggingFace,
        encoder_heads: heads("encoder_attention_heads")?,
        decoder_heads: heads("decoder_attention_heads")?,
        suppress: pick("suppress_tokens").unwrap_or_default(),
        suppress_begin: pick("begin_suppress_tokens")
            .unwrap_or_else(|| DEFAULT_SUPPRESS_BEGIN.to_vec()),
        tensors,
    })
}

/// A cursor over a CTranslate2 `model.bin`.
struct Ct2Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Ct2Reader<'a> {
    fn err(&self, reason: impl Into<String>) -> ModelError {
        ModelError::Format {
            path: self.path.to_path_buf(),
            reason: format!("at byte {}: {}", self.at, reason.into()),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.err(format!("truncated (wanted {n} more bytes)")))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ModelError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ModelError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ModelError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A string: u16 length including a trailing NUL, then the bytes.
    fn string(&mut self) -> Result<String, ModelError> {
        let len = usize::from(self.u16()?);
        let raw = self.take(len)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| self.err("variable name is not UTF-8"))
    }
}

/// One CTranslate2 variable.
#[derive(Debug)]
struct Ct2Var {
    dims: Vec<usize>,
    dtype: u8,
    data: Vec<u8>,
}

/// CTranslate2's data type ids (its `DataType` enum).
mod ct2_dtype {
    pub(super) const FLOAT32: u8 = 0;
    pub(super) const INT8: u8 = 1;
    pub(super) const INT16: u8 = 2;
    pub(super) const INT32: u8 = 3;
    pub(super) const FLOAT16: u8 = 4;
    pub(super) const BFLOAT16: u8 = 5;
}

impl Ct2Var {
    /// The variable as a float32 tensor (float16/bfloat16/float32 only: an int8 model
    /// would need its scales, which this reader does not apply).
    fn to_tensor(&self, name: &str) -> Result<Tensor, ModelError> {
        let floats: Vec<f32> = match self.dtype {
            ct2_dtype::FLOAT32 => self
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            ct2_dtype::FLOAT16 => self
                .data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            ct2_dtype::BFLOAT16 => self
                .data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::Tensor {
                    name: name.to_string(),
                    reason: format!(
                        "CTranslate2 data type {other} is not supported (quantised model? use a float16 or float32 conversion)"
                    ),
                })
            }
        };
        let count: usize = self.dims.iter().product();
        if floats.len() != count {
            return Err(ModelError::Tensor {
                name: name.to_string(),
                reason: format!("{} values for shape {:?}", floats.len(), self.dims),
            });
        }
        Ok(Tensor::from_vec(
            floats,
            self.dims.as_slice(),
            &Device::Cpu,
        )?)
    }

    /// A scalar integer variable (`num_heads`).
    fn scalar_int(&self) -> Option<i64> {
        match (self.dtype, self.data.len()) {
            (ct2_dtype::INT8, 1) => Some(i64::from(self.data[0] as i8)),
            (ct2_dtype::INT16, 2) => {
                Some(i64::from(i16::from_le_bytes([self.data[0], self.data[1]])))
            }
            (ct2_dtype::INT32, 4) => Some(i64::from(i32::from_le_bytes([
                self.data[0],
                self.data[1],
                self.data[2],
                self.data[3],
            ]))),
            _ => None,
        }
    }
}

/// Parses a CTranslate2 binary (version 6): header, variables, aliases.
fn parse_ct2(bytes: &[u8], path: &Path) -> Result<HashMap<String, Ct2Var>, ModelError> {
    let mut r = Ct2Reader { bytes, at: 0, path };
    let version = r.u32()?;
    if version != CT2_BINARY_VERSION {
        return Err(r.err(format!(
            "CTranslate2 binary version {version}, expected {CT2_BINARY_VERSION}"
        )));
    }
    let spec = r.string()?;
    if spec != "WhisperSpec" {
        return Err(r.err(format!("model spec {spec:?} is not WhisperSpec")));
    }
    let _revision = r.u32()?;
    let count = r.u32()?;
    let mut vars = HashMap::new();
    for _ in 0..count {
        let name = r.string()?;
        let rank = usize::from(r.u8()?);
        if rank > CT2_MAX_RANK {
            return Err(r.err(format!("{name}: rank {rank}")));
        }
        let dims = (0..rank)
            .map(|_| r.u32().map(|d| d as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let dtype = r.u8()?;
        let len = r.u32()? as usize;
        let data = r.take(len)?.to_vec();
        vars.insert(name, Ct2Var { dims, dtype, data });
    }
    // Aliases (the output projection shares the token embedding) are left out: the
    // model ties them itself.
    Ok(vars)
}

/// Moves a CTranslate2 variable to its Hugging Face name, splitting fused projections.
struct Ct2Mapper {
    vars: HashMap<String, Ct2Var>,
    out: HashMap<String, Tensor>,
}

impl Ct2Mapper {
    fn tensor(&self, name: &str) -> Result<Tensor, ModelError> {
        self.vars
            .get(name)
            .ok_or_else(|| ModelError::Tensor {
                name: name.to_string(),
                reason: "missing from model.bin".to_string(),
            })?
            .to_tensor(name)
    }

    fn copy(&mut self, from: &str, to: &str) -> Result<(), ModelError> {
        let t = self.tensor(from)?;
        self.out.insert(to.to_string(), t);
        Ok(())
    }

    fn linear(&mut self, from: &str, to: &str) -> Result<(), ModelError> {
        self.copy(&format!("{from}/weight"), &format!("{to}.weight"))?;
        self.copy(&format!("{from}/bias"), &format!("{to}.bias"))
    }

    fn layer_norm(&mut self, from: &str, to: &str) -> Result<(), ModelError> {
        self.copy(&format!("{from}/gamma"), &format!("{to}.weight"))?;
        self.copy(&format!("{from}/beta"), &format!("{to}.bias"))
    }

    /// A fused projection stored as `parts.len()` equal row blocks.
    fn split(&mut self, from: &str, to: &str, parts: &[&str]) -> Result<(), ModelError> {
        for kind in ["weight", "bias"] {
            let fused = self.tensor(&format!("{from}/{kind}"))?;
            let rows = fused.dim(0)?;
            if rows % parts.len() != 0 {
                return Err(ModelError::Tensor {
                    name: format!("{from}/{kind}"),
                    reason: format!("{rows} rows do not split into {} parts", parts.len()),
                });
            }
            let each = rows / parts.len();
            for (i, part) in parts.iter().enumerate() {
                let piece = fused.narrow(0, i * each, each)?.contiguous()?;
                self.out.insert(format!("{to}.{part}.{kind}"), piece);
            }
        }
        Ok(())
    }

    fn heads(&self, name: &str) -> Result<usize, ModelError> {
        self.vars
            .get(name)
            .and_then(Ct2Var::scalar_int)
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| ModelError::Tensor {
                name: name.to_string(),
                reason: "missing or not a positive integer".to_string(),
            })
    }

    /// A layer's self-attention (fused q|k|v split into three) and its layer norm, which
    /// encoder and decoder layers share.
    fn self_attention(&mut self, from: &str, to: &str) -> Result<(), ModelError> {
        self.split(
            &format!("{from}/self_attention/linear_0"),
            &format!("{to}.self_attn"),
            &["q_proj", "k_proj", "v_proj"],
        )?;
        self.linear(
            &format!("{from}/self_attention/linear_1"),
            &format!("{to}.self_attn.out_proj"),
        )?;
        self.layer_norm(
            &format!("{from}/self_attention/layer_norm"),
            &format!("{to}.self_attn_layer_norm"),
        )?;
        Ok(())
    }

    /// A layer's feed-forward block and its layer norm (encoder and decoder alike).
    fn ffn(&mut self, from: &str, to: &str) -> Result<(), ModelError> {
        self.linear(&format!("{from}/ffn/linear_0"), &format!("{to}.fc1"))?;
        self.linear(&format!("{from}/ffn/linear_1"), &format!("{to}.fc2"))?;
        self.layer_norm(
            &format!("{from}/ffn/layer_norm"),
            &format!("{to}.final_layer_norm"),
        )?;
        Ok(())
    }

    fn layers(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.vars
                    .contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    }
}

fn load_ct2(dir: &Path) -> Result<RawModel, ModelError> {
    let path = dir.join("model.bin");
    let bytes = read(&path)?;
    let vars = parse_ct2(&bytes, &path)?;
    drop(bytes);
    let mut m = Ct2Mapper {
        vars,
        out: HashMap::new(),
    };
    let encoder_heads = m.heads("encoder/num_heads")?;
    let decoder_heads = m.heads("decoder/num_heads")?;

    let e = "model.encoder";
    m.copy("encoder/conv1/weight", &format!("{e}.conv1.weight"))?;
    m.copy("encoder/conv1/bias", &format!("{e}.conv1.bias"))?;
    m.copy("encoder/conv2/weight", &format!("{e}.conv2.weight"))?;
    m.copy("encoder/conv2/bias", &format!("{e}.conv2.bias"))?;
    m.copy(
        "encoder/position_encodings/encodings",
        &format!("{e}.embed_positions.weight"),
    )?;
    m.layer_norm("encoder/layer_norm", &format!("{e}.layer_norm"))?;
    for i in 0..m.layers("encoder") {
        let (from, to) = (format!("encoder/layer_{i}"), format!("{e}.layers.{i}"));
        m.self_attention(&from, &to)?;
        m.ffn(&from, &to)?;
    }

    let d = "model.decoder";
    m.copy(
        "decoder/embeddings/weight",
        &format!("{d}.embed_tokens.weight"),
    )?;
    m.copy(
        "decoder/position_encodings/encodings",
        &format!("{d}.embed_positions.weight"),
    )?;
    m.layer_norm("decoder/layer_norm", &format!("{d}.layer_norm"))?;
    for i in 0..m.layers("decoder") {
        let (from, to) = (format!("decoder/layer_{i}"), format!("{d}.layers.{i}"));
        m.self_attention(&from, &to)?;
        m.linear(
            &format!("{from}/attention/linear_0"),
            &format!("{to}.encoder_attn.q_proj"),
        )?;
        m.split(
            &format!("{from}/attention/linear_1"),
            &format!("{to}.encoder_attn"),
            &["k_proj", "v_proj"],
        )?;
        m.linear(
            &format!("{from}/attention/linear_2"),
            &format!("{to}.encoder_attn.out_proj"),
        )?;
        m.layer_norm(
            &format!("{from}/attention/layer_norm"),
            &format!("{to}.encoder_attn_layer_norm"),
        )?;
        m.ffn(&from, &to)?;
    }

    let config = read_json(&dir.join("config.json"))?;
    Ok(RawModel {
        layout: Layout::CTranslate2,
        tensors: m.out,
        encoder_heads,
        decoder_heads,
        suppress: id_list(config.get("suppress_ids")).unwrap_or_default(),
        suppress_begin: id_list(config.get("suppress_ids_begin"))
            .unwrap_or_else(|| DEFAULT_SUPPRESS_BEGIN.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    #[test]
    fn parses_a_tiny_ct2_file_and_refuses_truncation() {
        let mut b = Vec::new();
        b.extend_from_slice(&6u32.to_le_bytes());
        string(&mut b, "WhisperSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        string(&mut b, "x/weight");
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(ct2_dtype::FLOAT16);
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&half::f16::from_f32(1.5).to_le_bytes());
        b.extend_from_slice(&half::f16::from_f32(-2.0).to_le_bytes());
        let path = Path::new("model.bin");
        let vars = parse_ct2(&b, path).unwrap();
        let t = vars["x/weight"].to_tensor("x/weight").unwrap();
        assert_eq!(t.dims(), &[2, 1]);
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [1.5, -2.0]
        );
        let err = parse_ct2(&b[..b.len() - 1], path).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn an_empty_folder_says_how_to_get_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let err = detect_layout(dir.path()).unwrap_err();
        assert!(err.to_string().contains("fetch-model.sh"), "{err}");
    }
}
