//! One Whisper pass over a stretch of audio: features, encoder, greedy decoding with
//! Whisper's token suppression, and the scores that tell speech from invention.

use crate::mel::MelFrontend;
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// Most tokens one pass may emit: Whisper's own `sample_len` (half the 448-token context),
/// so a runaway decode ends in bounded time.
pub const MAX_DECODE_TOKENS: usize = 224;

/// Tokens allowed per second of audio beyond [`TOKEN_SLACK`]. Fast English speech is about
/// 4 words (≈ 5–6 tokens) a second; twice that is never real speech, only a loop.
pub const MAX_TOKENS_PER_SECOND: f32 = 12.0;

/// Tokens every pass may emit whatever the audio's length (a short "okay, thanks.").
pub const TOKEN_SLACK: usize = 8;

/// A loop is this many consecutive copies of the same token run.
pub const LOOP_COPIES: usize = 3;

/// Shortest loop (copies × run length, in tokens) treated as invention: "no, no, no" is
/// speech, "thank you. thank you. thank you." is the model stuck.
pub const MIN_LOOP_TOKENS: usize = 6;

/// Longest token run a loop is searched for (a repeated sentence of ~ 8 words).
pub const MAX_LOOP_PERIOD: usize = 16;

/// Timings of one pass, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassTimings {
    /// Log-mel features.
    pub mel_ms: f64,
    /// Encoder.
    pub encode_ms: f64,
    /// Decoder, all tokens.
    pub decode_ms: f64,
    /// Tokens decoded (including the end of text).
    pub tokens: usize,
}

/// The outcome of one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Pass {
    /// The transcript (trimmed).
    pub text: String,
    /// Mean log-probability of the emitted tokens and the end of text.
    pub avg_logprob: f32,
    /// Probability the model gave the no-speech token at the start.
    pub no_speech_prob: f32,
    /// A loop was found and cut to one copy.
    pub looped: bool,
    /// The text's tokens (a later interim of the same utterance may start from them).
    pub tokens: Vec<u32>,
    /// Where the time went.
    pub timings: PassTimings,
}

/// Everything one pass needs, borrowed from the engine.
pub(crate) struct Decoder<'a> {
    pub(crate) model: &'a Model,
    pub(crate) tokenizer: &'a Tokenizer,
    pub(crate) mel: &'a MelFrontend,
    /// Additive logit bias: `-inf` on tokens never emitted, else 0.
    pub(crate) suppress: &'a [f32],
    /// Tokens never emitted first.
    pub(crate) suppress_begin: &'a [u32],
}

/// Length of the loop at the end of `tokens`, as `(period, copies)`, if any.
pub(crate) fn trailing_loop(tokens: &[u32]) -> Option<(usize, usize)> {
    for period in 1..=MAX_LOOP_PERIOD {
        let copies = LOOP_COPIES.max(MIN_LOOP_TOKENS.div_ceil(period));
        if period * copies > tokens.len() {
            break;
        }
        let tail = &tokens[tokens.len() - period * copies..];
        let unit = &tail[..period];
        if tail.chunks_exact(period).all(|c| c == unit) {
            return Some((period, copies));
        }
    }
    None
}

fn log_softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    logits[index] - max - sum.ln()
}

fn elapsed_ms(since: std::time::Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

impl Decoder<'_> {
    /// Transcribes `samples` (16 kHz, −1..1), padding the features with zeros to at least
    /// `min_frames` mel frames (10 ms each). `prefix` tokens are taken as already decoded:
    /// fed in one batched step, then greedy decoding goes on after them (the scores cover
    /// only the new tokens). An empty prefix is a plain decode.
    pub(crate) fn run(
        &self,
        samples: &[f32],
        min_frames: usize,
        prefix: &[u32],
    ) -> candle_core::Result<Pass> {
        let dims = self.model.dims();
        let max_frames = 2 * dims.max_source_positions;
        let max_samples = (max_frames - 1) * crate::mel::HOP;
        let samples = &samples[..samples.len().min(max_samples)];
        let mut timings = PassTimings::default();

        let t = std::time::Instant::now();
        let mel = self.mel.log_mel(samples, min_frames.min(max_frames))?;
        timings.mel_ms = elapsed_ms(t);

        let t = std::time::Instant::now();
        let audio = self.model.encode(&mel)?;
        timings.encode_ms = elapsed_ms(t);

        let t = std::time::Instant::now();
        let special = self.tokenizer.special;
        let mut prompt = vec![special.start_of_transcript];
        if self.tokenizer.is_multilingual(dims.vocab) {
            prompt.extend(special.english);
            prompt.extend(special.transcribe);
        }
        prompt.push(special.no_timestamps);
        let seconds = samples.len() as f32 / crate::SAMPLE_RATE as f32;
        let budget = MAX_DECODE_TOKENS
            .min(TOKEN_SLACK + (seconds * MAX_TOKENS_PER_SECOND) as usize)
            .min(dims.max_target_positions.saturating_sub(prompt.len() + 1));
        let prefix = &prefix[..prefix.len().min(budget.saturating_sub(1))];

        let mut state = self.model.start_decoder(&audio)?;
        let fed: Vec<u32> = prompt.iter().chain(prefix).copied().collect();
        let logits = self
            .model
            .decode_step(&mut state, &fed, &[0, fed.len() - 1])?;
        let mut logits = logits.into_iter();
        let first_row = logits.next().unwrap_or_default();
        let no_speech_prob = log_softmax_at(&first_row, special.no_speech as usize).exp();
        let mut row = logits.next().unwrap_or_default();

        let mut tokens: Vec<u32> = prefix.to_vec();
        let mut sum_logprob = 0f32;
        let mut looped = false;
        loop {
            let mut scores = self.bias(row);
            if tokens.is_empty() {
                for &t in self.suppress_begin {
                    if let Some(s) = scores.get_mut(t as usize) {
                        *s = f32::NEG_INFINITY;
                    }
                }
            }
            let next = scores
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as u32)
                .unwrap_or(special.end_of_text);
            sum_logprob += log_softmax_at(&scores, next as usize);
            timings.tokens += 1;
            if next == special.end_of_text {
                break;
            }
            tokens.push(next);
            if let Some((period, copies)) = trailing_loop(&tokens) {
                tokens.truncate(tokens.len() - period * (copies - 1));
                looped = true;
                break;
            }
            if tokens.len() >= budget {
                break;
            }
            row = self
                .model
                .decode_step(&mut state, &[next], &[0])?
                .pop()
                .unwrap_or_default();
        }
        timings.decode_ms = elapsed_ms(t);
        Ok(Pass {
            text: self.tokenizer.decode(&tokens).trim().to_string(),
            avg_logprob: sum_logprob / (tokens.len().saturating_sub(prefix.len()) + 1) as f32,
            no_speech_prob,
            looped,
            tokens,
            timings,
        })
    }

    fn bias(&self, mut scores: Vec<f32>) -> Vec<f32> {
        for (s, b) in scores.iter_mut().zip(self.suppress) {
            *s += b;
        }
        scores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_loops_but_not_short_stutters() {
        assert_eq!(trailing_loop(&[5, 1, 2, 1, 2, 1, 2]), Some((2, 3)));
        assert_eq!(
            trailing_loop(&[7, 7, 7]),
            None,
            "three equal tokens are a stutter"
        );
        assert_eq!(trailing_loop(&[7; 6]), Some((1, 6)));
        assert_eq!(
            trailing_loop(&[1, 2, 3, 1, 2, 3]),
            None,
            "two copies are allowed"
        );
        assert_eq!(trailing_loop(&[9, 1, 2, 3, 1, 2, 3, 1, 2, 3]), Some((3, 3)));
        assert_eq!(trailing_loop(&[]), None);
    }

    #[test]
    fn log_softmax_normalises() {
        let l = [1.0f32, 2.0, 3.0];
        let total: f32 = (0..3).map(|i| log_softmax_at(&l, i).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }
}
