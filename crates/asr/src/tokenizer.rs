//! Whisper's tokenizer, decode direction only: the engine never encodes text (its
//! prompt is special tokens), so `tokenizer.json`'s byte-level BPE vocabulary is enough
//! and no tokenizer library (with its regex engines) is needed.

use std::collections::HashMap;
use std::path::Path;

use crate::model_dir::{read_json, ModelError};

/// Token ids of the control tokens the decoder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpecialTokens {
    pub(crate) end_of_text: u32,
    pub(crate) start_of_transcript: u32,
    pub(crate) no_speech: u32,
    pub(crate) no_timestamps: u32,
    /// `<|en|>` and `<|transcribe|>`, present only in multilingual vocabularies.
    pub(crate) english: Option<u32>,
    pub(crate) transcribe: Option<u32>,
}

/// Maps token ids back to text.
#[derive(Debug, Clone)]
pub(crate) struct Tokenizer {
    /// Bytes of each ordinary token; special tokens are absent.
    bytes: HashMap<u32, Vec<u8>>,
    pub(crate) special: SpecialTokens,
}

/// GPT-2's byte-level alphabet: each byte is written as one printable code point so BPE
/// tokens are valid text; this inverts that table.
fn unicode_to_byte() -> HashMap<char, u8> {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut map = HashMap::new();
    let mut next = 0u32;
    for b in 0u32..=255 {
        let c = if printable(b) {
            b
        } else {
            next += 1;
            255 + next
        };
        if let Some(c) = char::from_u32(c) {
            map.insert(c, b as u8);
        }
    }
    map
}

impl Tokenizer {
    /// Reads `tokenizer.json` (Hugging Face format, byte-level BPE) from `dir`.
    pub(crate) fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("tokenizer.json");
        let json = read_json(&path)?;
        let bad = |reason: &str| ModelError::Json {
            path: path.clone(),
            reason: reason.to_string(),
        };
        let vocab = json
            .pointer("/model/vocab")
            .and_then(|v| v.as_object())
            .ok_or_else(|| bad("no model.vocab"))?;
        let alphabet = unicode_to_byte();
        let mut bytes = HashMap::with_capacity(vocab.len());
        for (token, id) in vocab {
            let Some(id) = id.as_u64().and_then(|n| u32::try_from(n).ok()) else {
                continue;
            };
            let decoded: Option<Vec<u8>> =
                token.chars().map(|c| alphabet.get(&c).copied()).collect();
            bytes.insert(id, decoded.unwrap_or_else(|| token.as_bytes().to_vec()));
        }
        let mut added = HashMap::new();
        for entry in json
            .get("added_tokens")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            if let (Some(content), Some(id)) = (
                entry.get("content").and_then(|v| v.as_str()),
                entry.get("id").and_then(|v| v.as_u64()),
            ) {
                bytes.remove(&(id as u32));
                added.insert(content.to_string(), id as u32);
            }
        }
        let need = |name: &str| {
            added
                .get(name)
                .copied()
                .ok_or_else(|| bad(&format!("no {name} token")))
        };
        let special = SpecialTokens {
            end_of_text: need("<|endoftext|>")?,
            start_of_transcript: need("<|startoftranscript|>")?,
            no_speech: need("<|nocaptions|>").or_else(|_| need("<|nospeech|>"))?,
            no_timestamps: need("<|notimestamps|>")?,
            english: added.get("<|en|>").copied(),
            transcribe: added.get("<|transcribe|>").copied(),
        };
        Ok(Tokenizer { bytes, special })
    }

    /// Whether the vocabulary is multilingual (has language and task tokens); English-only
    /// models (`*.en`) take no language token in the prompt.
    pub(crate) fn is_multilingual(&self, vocab_size: usize) -> bool {
        // English-only Whisper vocabularies are one token shorter (51864 vs 51865).
        vocab_size >= MULTILINGUAL_VOCAB
    }

    /// The text of `tokens`, special tokens skipped, invalid UTF-8 replaced.
    pub(crate) fn decode(&self, tokens: &[u32]) -> String {
        let mut out = Vec::new();
        for t in tokens {
            if let Some(b) = self.bytes.get(t) {
                out.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Vocabulary size of multilingual Whisper models.
const MULTILINGUAL_VOCAB: usize = 51_865;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let map = unicode_to_byte();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'a'], b'a');
    }
}
