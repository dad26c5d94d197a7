//! The Whisper network on candle tensors: encoder, and a decoder with a full key-value
//! cache.
//!
//! candle-transformers' `Whisper` is not used as is, for three reasons measured on this
//! machine: its decoder caches only the cross-attention and recomputes the whole prefix at
//! every step (51 ms a token on tiny.en; with a full cache 16.7 ms, identical tokens); it
//! uses the tanh approximation of GELU while the checkpoints were trained with the exact
//! (erf) one; and its weights must come through a `VarBuilder` under its own layout. This
//! module keeps the same architecture (OpenAI's `whisper/model.py`) on the same primitives
//! (`candle_nn::{Linear, LayerNorm, Conv1d}`) with those three things changed. The model is
//! immutable: per-decode state lives in [`DecoderState`], so one loaded model serves every
//! session of an engine.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Conv1d, Conv1dConfig, LayerNorm, Linear};
use half::slice::HalfFloatSliceExt;

use crate::model_dir::{ModelError, RawModel};

/// LayerNorm epsilon of every Whisper checkpoint.
const LAYER_NORM_EPS: f64 = 1e-5;

/// Sizes of a Whisper model, read off its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Mel bands of the input (80, or 128 for large-v3).
    pub n_mels: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Tokens in the vocabulary.
    pub vocab: usize,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Encoder attention heads.
    pub encoder_heads: usize,
    /// Decoder attention heads.
    pub decoder_heads: usize,
    /// Encoder positions (1500 = 30 s of 20 ms frames).
    pub max_source_positions: usize,
    /// Decoder positions (448 tokens).
    pub max_target_positions: usize,
}

struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| ModelError::Tensor {
                name: name.to_string(),
                reason: "missing".to_string(),
            })?;
        if t.dims() != shape {
            return Err(ModelError::Tensor {
                name: name.to_string(),
                reason: format!("shape {:?}, expected {shape:?}", t.dims()),
            });
        }
        Ok(t)
    }

    fn dims_of(&self, name: &str) -> Result<Vec<usize>, ModelError> {
        self.tensors
            .get(name)
            .map(|t| t.dims().to_vec())
            .ok_or_else(|| ModelError::Tensor {
                name: name.to_string(),
                reason: "missing".to_string(),
            })
    }

    fn linear(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias: Bias,
    ) -> Result<Linear, ModelError> {
        let w = self.get(&format!("{name}.weight"), &[d_out, d_in])?;
        let b_name = format!("{name}.bias");
        let b = match bias {
            Bias::Required => Some(self.get(&b_name, &[d_out])?),
            // Whisper's key projections have no bias; CTranslate2 stores zeros for it.
            Bias::IfPresent if self.tensors.contains_key(&b_name) => {
                Some(self.get(&b_name, &[d_out])?)
            }
            Bias::IfPresent => None,
        };
        Ok(Linear::new(w, b))
    }

    fn layer_norm(&mut self, name: &str, d: usize) -> Result<LayerNorm, ModelError> {
        let w = self.get(&format!("{name}.weight"), &[d])?;
        let b = self.get(&format!("{name}.bias"), &[d])?;
        Ok(LayerNorm::new(w, b, LAYER_NORM_EPS))
    }

    fn layers(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.tensors
                    .contains_key(&format!("{prefix}.layers.{i}.fc1.weight"))
            })
            .count()
    }
}

#[derive(Clone, Copy)]
enum Bias {
    Required,
    IfPresent,
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn load(w: &mut Weights, name: &str, d: usize, heads: usize) -> Result<Self, ModelError> {
        Ok(Attention {
            q: w.linear(&format!("{name}.q_proj"), d, d, Bias::Required)?,
            k: w.linear(&format!("{name}.k_proj"), d, d, Bias::IfPresent)?,
            v: w.linear(&format!("{name}.v_proj"), d, d, Bias::Required)?,
            out: w.linear(&format!("{name}.out_proj"), d, d, Bias::Required)?,
            heads,
        })
    }

    /// `(1, t, d)` → `(1, heads, t, d / heads)`.
    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        x.reshape((b, t, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `x`, split into heads.
    fn keys_values(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&self.k.forward(x)?)?,
            self.split_heads(&self.v.forward(x)?)?,
        ))
    }

    /// Attention of the queries of `x` over `k`/`v`; `causal_offset` masks keys after
    /// each query's own position (`Some(past)` when `x` follows `past` cached tokens).
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        causal_offset: Option<usize>,
    ) -> candle_core::Result<Tensor> {
        let q = self.split_heads(&self.q.forward(x)?)?;
        let head_dim = q.dim(D::Minus1)?;
        let q = (q * (head_dim as f64).powf(-0.5))?;
        let mut scores = q.matmul(&k.transpose(2, 3)?)?; // (1, h, t, T)
        if let Some(past) = causal_offset {
            let t = q.dim(2)?;
            if t > 1 {
                let total = k.dim(2)?;
                let mask: Vec<f32> = (0..t)
                    .flat_map(|i| {
                        (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, (t, total), &Device::Cpu)?;
                scores = scores.broadcast_add(&mask)?;
            }
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let mixed = weights.matmul(v)?.transpose(1, 2)?.flatten_from(2)?;
        self.out.forward(&mixed)
    }
}

#[derive(Debug, Clone)]
struct Block {
    attn: Attention,
    attn_ln: LayerNorm,
    cross: Option<(Attention, LayerNorm)>,
    fc1: Linear,
    fc2: Linear,
    mlp_ln: LayerNorm,
}

impl Block {
    fn load(
        w: &mut Weights,
        name: &str,
        d: usize,
        heads: usize,
        cross: bool,
    ) -> Result<Self, ModelError> {
        let cross = if cross {
            Some((
                Attention::load(w, &format!("{name}.encoder_attn"), d, heads)?,
                w.layer_norm(&format!("{name}.encoder_attn_layer_norm"), d)?,
            ))
        } else {
            None
        };
        Ok(Block {
            attn: Attention::load(w, &format!("{name}.self_attn"), d, heads)?,
            attn_ln: w.layer_norm(&format!("{name}.self_attn_layer_norm"), d)?,
            cross,
            fc1: w.linear(&format!("{name}.fc1"), d, 4 * d, Bias::Required)?,
            fc2: w.linear(&format!("{name}.fc2"), 4 * d, d, Bias::Required)?,
            mlp_ln: w.layer_norm(&format!("{name}.final_layer_norm"), d)?,
        })
    }

    fn mlp(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.fc1.forward(&self.mlp_ln.forward(x)?)?.gelu_erf()?;
        x + self.fc2.forward(&h)?
    }
}

#[derive(Debug, Clone)]
struct Encoder {
    conv1: Conv1d,
    conv2: Conv1d,
    positions: Tensor,
    blocks: Vec<Block>,
    ln: LayerNorm,
}

/// The token embedding, used twice: to embed the tokens fed and (tied) as the output
/// projection. Kept as float16 (what the checkpoints ship, so no precision is lost): half
/// the memory of float32 (40 MB instead of 80 for tiny.en). The projection reads all of it
/// for every token; measured here, this row-parallel dot product takes about as long as
/// candle's float32 matrix product (≈ 8–14 ms a token on 2 busy cores) — it is the
/// largest single cost of decoding, and the place to optimise next (int8 rows, AVX-512).
#[derive(Clone)]
struct Vocab {
    rows: usize,
    width: usize,
    weights: Vec<half::f16>,
}

impl std::fmt::Debug for Vocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vocab({} x {})", self.rows, self.width)
    }
}

/// Rows of the projection one rayon task computes: enough work to amortise the task.
const VOCAB_ROWS_PER_TASK: usize = 1024;

impl Vocab {
    fn from_tensor(t: &Tensor) -> candle_core::Result<Self> {
        let (rows, width) = t.dims2()?;
        let weights = t
            .to_dtype(DType::F16)?
            .flatten_all()?
            .to_vec1::<half::f16>()?;
        Ok(Vocab {
            rows,
            width,
            weights,
        })
    }

    /// Embeddings of `ids`, shape `(ids.len(), width)`.
    fn embed(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let mut out = vec![0f32; ids.len() * self.width];
        for (dst, &id) in out.chunks_exact_mut(self.width).zip(ids) {
            let id = (id as usize).min(self.rows - 1);
            self.weights[id * self.width..(id + 1) * self.width].convert_to_f32_slice(dst);
        }
        Tensor::from_vec(out, (ids.len(), self.width), &Device::Cpu)
    }

    /// Logits of one hidden state `x` (length `width`) against every token.
    fn logits(&self, x: &[f32]) -> Vec<f32> {
        use rayon::prelude::*;
        let mut out = vec![0f32; self.rows];
        out.par_chunks_mut(VOCAB_ROWS_PER_TASK)
            .enumerate()
            .for_each(|(chunk, dst)| {
                let mut row = vec![0f32; self.width];
                for (i, logit) in dst.iter_mut().enumerate() {
                    let r = chunk * VOCAB_ROWS_PER_TASK + i;
                    self.weights[r * self.width..(r + 1) * self.width]
                        .convert_to_f32_slice(&mut row);
                    *logit = dot(&row, x);
                }
            });
        out
    }
}

/// Dot product with eight independent sums, so the compiler can vectorise it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[derive(Debug, Clone)]
struct Decoder {
    vocab: Vocab,
    positions: Tensor,
    blocks: Vec<Block>,
    ln: LayerNorm,
}

/// A loaded Whisper model (immutable; the engine shares it between sessions).
#[derive(Debug, Clone)]
pub(crate) struct Model {
    dims: Dims,
    encoder: Encoder,
    decoder: Decoder,
}

/// Per-decode state: the cached keys and values of every decoder layer.
pub(crate) struct DecoderState {
    /// Self-attention keys/values of the tokens so far, per layer.
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    /// Cross-attention keys/values of the encoder output, per layer.
    cross_kv: Vec<(Tensor, Tensor)>,
    /// Tokens fed so far.
    pub(crate) len: usize,
}

impl Model {
    /// Builds the network from a model directory's tensors.
    pub(crate) fn from_raw(raw: RawModel) -> Result<Self, ModelError> {
        let mut w = Weights {
            tensors: raw.tensors,
        };
        let conv1_dims = w.dims_of("model.encoder.conv1.weight")?;
        let embed_dims = w.dims_of("model.decoder.embed_tokens.weight")?;
        let enc_pos = w.dims_of("model.encoder.embed_positions.weight")?;
        let dec_pos = w.dims_of("model.decoder.embed_positions.weight")?;
        let (&[d_model, n_mels, 3], &[vocab, _], &[max_source, _], &[max_target, _]) = (
            conv1_dims.as_slice(),
            embed_dims.as_slice(),
            enc_pos.as_slice(),
            dec_pos.as_slice(),
        ) else {
            return Err(ModelError::Tensor {
                name: "model.encoder.conv1.weight".into(),
                reason: format!(
                    "unexpected shapes {conv1_dims:?} {embed_dims:?} {enc_pos:?} {dec_pos:?}"
                ),
            });
        };
        let dims = Dims {
            n_mels,
            d_model,
            vocab,
            encoder_layers: w.layers("model.encoder"),
            decoder_layers: w.layers("model.decoder"),
            encoder_heads: raw.encoder_heads,
            decoder_heads: raw.decoder_heads,
            max_source_positions: max_source,
            max_target_positions: max_target,
        };
        if d_model % dims.encoder_heads != 0 || d_model % dims.decoder_heads != 0 {
            return Err(ModelError::Tensor {
                name: "num_heads".into(),
                reason: format!(
                    "{d_model} does not split into {}/{} heads",
                    dims.encoder_heads, dims.decoder_heads
                ),
            });
        }
        let d = d_model;
        let conv = |stride| Conv1dConfig {
            padding: 1,
            stride,
            dilation: 1,
            groups: 1,
            cudnn_fwd_algo: None,
        };
        let conv1 = Conv1d::new(
            w.get("model.encoder.conv1.weight", &[d, n_mels, 3])?,
            Some(w.get("model.encoder.conv1.bias", &[d])?),
            conv(1),
        );
        let conv2 = Conv1d::new(
            w.get("model.encoder.conv2.weight", &[d, d, 3])?,
            Some(w.get("model.encoder.conv2.bias", &[d])?),
            conv(2),
        );
        let encoder = Encoder {
            conv1,
            conv2,
            positions: w.get("model.encoder.embed_positions.weight", &[max_source, d])?,
            blocks: (0..dims.encoder_layers)
                .map(|i| {
                    Block::load(
                        &mut w,
                        &format!("model.encoder.layers.{i}"),
                        d,
                        dims.encoder_heads,
                        false,
                    )
                })
                .collect::<Result<_, _>>()?,
            ln: w.layer_norm("model.encoder.layer_norm", d)?,
        };
        let decoder = Decoder {
            vocab: Vocab::from_tensor(&w.get("model.decoder.embed_tokens.weight", &[vocab, d])?)?,
            positions: w.get("model.decoder.embed_positions.weight", &[max_target, d])?,
            blocks: (0..dims.decoder_layers)
                .map(|i| {
                    Block::load(
                        &mut w,
                        &format!("model.decoder.layers.{i}"),
                        d,
                        dims.decoder_heads,
                        true,
                    )
                })
                .collect::<Result<_, _>>()?,
            ln: w.layer_norm("model.decoder.layer_norm", d)?,
        };
        Ok(Model {
            dims,
            encoder,
            decoder,
        })
    }

    /// The model's sizes.
    pub(crate) fn dims(&self) -> Dims {
        self.dims
    }

    /// Encodes log-mel features `(1, n_mels, frames)` (frames even, at most twice the
    /// encoder positions) into `(1, frames / 2, d_model)`.
    pub(crate) fn encode(&self, mel: &Tensor) -> candle_core::Result<Tensor> {
        let e = &self.encoder;
        let x = e.conv1.forward(mel)?.gelu_erf()?;
        let x = e.conv2.forward(&x)?.gelu_erf()?;
        let x = x.transpose(1, 2)?;
        let n = x.dim(1)?;
        let mut x = x.broadcast_add(&e.positions.narrow(0, 0, n)?)?;
        for block in &e.blocks {
            let h = block.attn_ln.forward(&x)?;
            let (k, v) = block.attn.keys_values(&h)?;
            x = (&x + block.attn.attend(&h, &k, &v, None)?)?;
            x = block.mlp(&x)?;
        }
        e.ln.forward(&x)
    }

    /// A fresh decoder state over `audio`, the encoder's output.
    pub(crate) fn start_decoder(&self, audio: &Tensor) -> candle_core::Result<DecoderState> {
        let cross_kv = self
            .decoder
            .blocks
            .iter()
            .map(|b| {
                b.cross
                    .as_ref()
                    .expect("decoder blocks have cross-attention")
                    .0
                    .keys_values(audio)
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(DecoderState {
            self_kv: vec![None; self.decoder.blocks.len()],
            cross_kv,
            len: 0,
        })
    }

    /// Feeds `tokens` after the ones already in `state` and returns the logits at the
    /// positions listed in `want` (indices into `tokens`), one vector per position.
    pub(crate) fn decode_step(
        &self,
        state: &mut DecoderState,
        tokens: &[u32],
        want: &[usize],
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let dec = &self.decoder;
        let past = state.len;
        let x = dec.vocab.embed(tokens)?;
        let x = (x + dec.positions.narrow(0, past, tokens.len())?)?;
        let mut x = x.unsqueeze(0)?;
        for (i, block) in dec.blocks.iter().enumerate() {
            let h = block.attn_ln.forward(&x)?;
            let (k_new, v_new) = block.attn.keys_values(&h)?;
            let (k, v) = match state.self_kv[i].take() {
                Some((k, v)) => (
                    Tensor::cat(&[&k, &k_new], 2)?,
                    Tensor::cat(&[&v, &v_new], 2)?,
                ),
                None => (k_new, v_new),
            };
            x = (&x + block.attn.attend(&h, &k, &v, Some(past))?)?;
            state.self_kv[i] = Some((k, v));
            let (cross, cross_ln) = block
                .cross
                .as_ref()
                .expect("decoder blocks have cross-attention");
            let (ck, cv) = &state.cross_kv[i];
            x = (&x + cross.attend(&cross_ln.forward(&x)?, ck, cv, None)?)?;
            x = block.mlp(&x)?;
        }
        state.len += tokens.len();
        let x = dec.ln.forward(&x)?.squeeze(0)?;
        let hidden = x.to_vec2::<f32>()?;
        Ok(want.iter().map(|&i| dec.vocab.logits(&hidden[i])).collect())
    }
}
