//! The detector's state as a short ASCII string, so a stateless component can carry it
//! between requests in an HTTP header value.
//!
//! Format (version 1): fourteen fields joined by `.`, all decimal unless noted:
//!
//! ```text
//! v1.<rate>.<ch>.<frames>.<talk_ms>.<floor>.<phase>.<a>.<b>.<wf>.<wsq>.<wzc>.<wneg>.x<carry>
//! ```
//!
//! - `rate`, `ch`: the stream format, checked against the caller's on load.
//! - `frames`: whole sample frames pushed (the stream clock).
//! - `talk_ms`: talk time of the segments already ended.
//! - `floor`: noise floor in millidecibels relative to full scale (`-50000` = -50 dBFS).
//! - `phase` `q` (quiet): `a` = frames of the current speech run, `b` = `0`;
//!   `phase` `s` (speech): `a` = start frame of the open segment, `b` = frames of the
//!   current non-speech run.
//! - `wf`, `wsq`, `wzc`, `wneg`: the open analysis window: frames, sum of squared
//!   samples, zero crossings, whether its last sample was negative (`0`/`1`).
//! - `carry`: lowercase hex of the 0–3 bytes of a sample frame split by the last push.
//!
//! A fresh 16 kHz mono detector is `v1.16000.1.0.0.-50000.q.0.0.0.0.0.0.x`. Every field
//! is bounded, so the string never reaches `MAX_STATE_LEN`; only `[0-9a-z.x-]` appear,
//! which is safe in any header value.

use std::fmt;
use std::fmt::Write as _;

use crate::detector::{Carry, Phase, Vad};
use crate::format::{validate, FormatError};
use crate::level::WindowAccumulator;
use crate::thresholds::SILENCE_LEVEL_DBFS;

/// Longest state string accepted, in bytes. The longest string `to_state_string` can
/// write is about 110 bytes; 200 keeps the header well under common 8 KiB header limits.
pub const MAX_STATE_LEN: usize = 200;

/// The version tag of the current format.
const VERSION: &str = "v1";

/// Most frames a stream may count: 2^53 frames is over 5,900 years at 48 kHz, and the
/// bound keeps every derived sum far from overflow whatever a tampered state says.
const MAX_FRAMES: u64 = 1 << 53;

/// Why a state string could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadStateError {
    /// The format passed to `from_state_string` is itself unsupported.
    Format(FormatError),
    /// The string is longer than `MAX_STATE_LEN`.
    TooLong {
        /// Its length, in bytes.
        len: usize,
        /// `MAX_STATE_LEN`.
        max: usize,
    },
    /// The string is not a version-1 state (another version, or not a state at all).
    UnknownVersion,
    /// The state was written for another stream format.
    FormatMismatch {
        /// Sample rate recorded in the state, in Hz.
        sample_rate: u32,
        /// Channels recorded in the state.
        channels: u16,
    },
    /// A field is missing, unparsable, or inconsistent with the others.
    Malformed {
        /// Name of the field (as in the format description).
        field: &'static str,
    },
}

impl fmt::Display for VadStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VadStateError::Format(e) => write!(f, "cannot restore detector state: {e}"),
            VadStateError::TooLong { len, max } => {
                write!(f, "detector state is {len} bytes, longer than {max}")
            }
            VadStateError::UnknownVersion => write!(f, "detector state is not a {VERSION} state"),
            VadStateError::FormatMismatch {
                sample_rate,
                channels,
            } => write!(
                f,
                "detector state was written for {sample_rate} Hz with {channels} channel(s)"
            ),
            VadStateError::Malformed { field } => {
                write!(f, "detector state has a malformed `{field}` field")
            }
        }
    }
}

impl std::error::Error for VadStateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VadStateError::Format(e) => Some(e),
            _ => None,
        }
    }
}

impl From<FormatError> for VadStateError {
    fn from(e: FormatError) -> Self {
        VadStateError::Format(e)
    }
}

impl Vad {
    /// The detector's whole state as a compact ASCII string (format in the `state`
    /// module docs), shorter than `MAX_STATE_LEN` and safe in an HTTP header value.
    pub fn to_state_string(&self) -> String {
        let (phase, a, b) = match self.phase {
            Phase::Quiet { speech_run } => ('q', speech_run, 0),
            Phase::Speech {
                start_frame,
                silence_run,
            } => ('s', start_frame, silence_run),
        };
        let w = &self.window;
        let mut s = format!(
            "{VERSION}.{}.{}.{}.{}.{}.{phase}.{a}.{b}.{}.{}.{}.{}.x",
            self.sample_rate,
            self.channels,
            self.frames,
            self.talk_ms,
            self.noise_floor_mdb,
            w.frames,
            w.sum_sq,
            w.crossings,
            u8::from(w.prev_negative),
        );
        for byte in self.carry.as_slice() {
            let _ = write!(s, "{byte:02x}");
        }
        s
    }

    /// Restores a detector from `to_state_string` output, for a stream of `sample_rate`
    /// Hz and `channels` channels; a state written for another format is refused.
    /// Every field is checked, so a corrupted or forged string is an error, never a panic.
    pub fn from_state_string(
        s: &str,
        sample_rate: u32,
        channels: u16,
    ) -> Result<Self, VadStateError> {
        validate(sample_rate, channels)?;
        if s.len() > MAX_STATE_LEN {
            return Err(VadStateError::TooLong {
                len: s.len(),
                max: MAX_STATE_LEN,
            });
        }
        let fields: Vec<&str> = s.split('.').collect();
        if fields.first() != Some(&VERSION) {
            return Err(VadStateError::UnknownVersion);
        }
        let [_, rate, ch, frames, talk_ms, floor, phase, a, b, wf, wsq, wzc, wneg, carry] =
            fields[..]
        else {
            return Err(malformed("fields"));
        };
        let state_rate =
            u32::try_from(number(rate, "sample_rate")?).map_err(|_| malformed("sample_rate"))?;
        let state_channels =
            u16::try_from(number(ch, "channels")?).map_err(|_| malformed("channels"))?;
        if (state_rate, state_channels) != (sample_rate, channels) {
            return Err(VadStateError::FormatMismatch {
                sample_rate: state_rate,
                channels: state_channels,
            });
        }

        let mut vad = Vad::new(sample_rate, channels)?;
        vad.frames = number(frames, "frames")?;
        check(vad.frames <= MAX_FRAMES, "frames")?;
        vad.talk_ms = number(talk_ms, "talk_ms")?;
        check(vad.talk_ms <= vad.stream_ms(), "talk_ms")?;
        vad.noise_floor_mdb = signed(floor, "floor")?;
        check(
            (SILENCE_LEVEL_DBFS * 1000..=0).contains(&vad.noise_floor_mdb),
            "floor",
        )?;

        let window_frames = u32::try_from(number(wf, "wf")?).map_err(|_| malformed("wf"))?;
        check(
            window_frames < vad.window_frames() && u64::from(window_frames) <= vad.frames,
            "wf",
        )?;
        let sum_sq = number(wsq, "wsq")?;
        check(sum_sq <= u64::from(window_frames) << 30, "wsq")?;
        let crossings = u32::try_from(number(wzc, "wzc")?).map_err(|_| malformed("wzc"))?;
        check(crossings <= window_frames.saturating_sub(1), "wzc")?;
        let prev_negative = match wneg {
            "0" => false,
            "1" if window_frames > 0 => true,
            _ => return Err(malformed("wneg")),
        };
        vad.window = WindowAccumulator {
            frames: window_frames,
            sum_sq,
            crossings,
            prev_negative,
        };

        let analysed = vad.analysed_frames();
        let (a, b) = (number(a, "a")?, number(b, "b")?);
        vad.phase = match phase {
            "q" => {
                check(a < vad.start_frames() && a <= analysed, "a")?;
                check(b == 0, "b")?;
                Phase::Quiet { speech_run: a }
            }
            "s" => {
                check(b < vad.hangover_frames() && b <= analysed, "b")?;
                check(a <= analysed - b, "a")?;
                Phase::Speech {
                    start_frame: a,
                    silence_run: b,
                }
            }
            _ => return Err(malformed("phase")),
        };
        check(vad.talk_ms() <= vad.stream_ms(), "talk_ms")?;

        vad.carry = parse_carry(carry, vad.frame_bytes())?;
        Ok(vad)
    }
}

fn malformed(field: &'static str) -> VadStateError {
    VadStateError::Malformed { field }
}

fn check(ok: bool, field: &'static str) -> Result<(), VadStateError> {
    if ok {
        Ok(())
    } else {
        Err(malformed(field))
    }
}

/// An unsigned decimal of digits only (no sign, no spaces).
fn number(s: &str, field: &'static str) -> Result<u64, VadStateError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(field));
    }
    s.parse().map_err(|_| malformed(field))
}

/// A decimal with an optional leading `-`.
fn signed(s: &str, field: &'static str) -> Result<i32, VadStateError> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let magnitude = i64::try_from(number(digits, field)?).map_err(|_| malformed(field))?;
    i32::try_from(if negative { -magnitude } else { magnitude }).map_err(|_| malformed(field))
}

fn parse_carry(s: &str, frame_bytes: usize) -> Result<Carry, VadStateError> {
    let hex = s.strip_prefix('x').ok_or(malformed("carry"))?;
    let len = hex.len() / 2;
    check(hex.len() % 2 == 0 && len < frame_bytes, "carry")?;
    let mut carry = Carry {
        bytes: [0; 3],
        len: len as u8,
    };
    for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(malformed("carry")),
        };
        carry.bytes[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(carry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{interleave, noise, to_bytes, tone};

    #[test]
    fn fresh_state_is_short_and_round_trips() {
        let vad = Vad::new(16_000, 1).unwrap();
        let s = vad.to_state_string();
        assert_eq!(s, "v1.16000.1.0.0.-50000.q.0.0.0.0.0.0.x");
        assert_eq!(Vad::from_state_string(&s, 16_000, 1), Ok(vad));
    }

    #[test]
    fn state_mid_window_mid_frame_and_mid_speech_round_trips() {
        let audio = to_bytes(&interleave(
            &tone(48_000, 700, 440.0, 9000),
            &noise(48_000, 700, 300, 9),
        ));
        let mut vad = Vad::new(48_000, 2).unwrap();
        vad.push(&audio[..audio.len() / 2 + 123]);
        assert!(vad.in_speech());
        assert!(vad.window.frames > 0 && vad.carry.len == 3);
        let s = vad.to_state_string();
        assert!(
            s.ends_with(&format!(
                "x{:02x}{:02x}{:02x}",
                vad.carry.bytes[0], vad.carry.bytes[1], vad.carry.bytes[2]
            )),
            "{s}"
        );
        assert_eq!(Vad::from_state_string(&s, 48_000, 2), Ok(vad));
    }

    #[test]
    fn longest_state_fits_a_header() {
        let mut vad = Vad::new(48_000, 2).unwrap();
        vad.frames = MAX_FRAMES;
        vad.talk_ms = vad.stream_ms() / 2;
        vad.noise_floor_mdb = SILENCE_LEVEL_DBFS * 1000;
        vad.window = WindowAccumulator {
            frames: 479,
            sum_sq: 479 << 30,
            crossings: 478,
            prev_negative: true,
        };
        vad.phase = Phase::Speech {
            start_frame: 1 << 52,
            silence_run: vad.hangover_frames() - 1,
        };
        vad.carry = Carry {
            bytes: [0xab, 0xcd, 0xef],
            len: 3,
        };
        let s = vad.to_state_string();
        assert!(s.len() < MAX_STATE_LEN, "{} bytes: {s}", s.len());
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
        assert_eq!(Vad::from_state_string(&s, 48_000, 2), Ok(vad));
    }

    #[test]
    fn bad_states_are_typed_errors() {
        let ok = "v1.16000.1.160.0.-50000.q.160.0.0.0.0.0.x";
        assert!(Vad::from_state_string(ok, 16_000, 1).is_ok());
        let cases: &[(&str, VadStateError)] = &[
            ("", VadStateError::UnknownVersion),
            (
                "v2.16000.1.0.0.-50000.q.0.0.0.0.0.0.x",
                VadStateError::UnknownVersion,
            ),
            ("v1.16000.1.0", malformed("fields")),
            (
                "v1.16000.1.160.0.-50000.q.160.0.0.0.0.0.x.",
                malformed("fields"),
            ),
            (
                "v1.8000.1.160.0.-50000.q.160.0.0.0.0.0.x",
                VadStateError::FormatMismatch {
                    sample_rate: 8000,
                    channels: 1,
                },
            ),
            (
                "v1.16000.2.160.0.-50000.q.160.0.0.0.0.0.x",
                VadStateError::FormatMismatch {
                    sample_rate: 16000,
                    channels: 2,
                },
            ),
            (
                "v1.16000.1.+160.0.-50000.q.160.0.0.0.0.0.x",
                malformed("frames"),
            ),
            (
                "v1.16000.1.160.11.-50000.q.160.0.0.0.0.0.x",
                malformed("talk_ms"),
            ),
            ("v1.16000.1.160.0.5.q.160.0.0.0.0.0.x", malformed("floor")),
            ("v1.16000.1.160.0.--5.q.160.0.0.0.0.0.x", malformed("floor")),
            (
                "v1.16000.1.160.0.-50000.z.160.0.0.0.0.0.x",
                malformed("phase"),
            ),
            ("v1.16000.1.160.0.-50000.q.800.0.0.0.0.0.x", malformed("a")),
            ("v1.16000.1.160.0.-50000.q.160.1.0.0.0.0.x", malformed("b")),
            ("v1.16000.1.160.0.-50000.s.0.4800.0.0.0.0.x", malformed("b")),
            ("v1.16000.1.160.0.-50000.s.161.0.0.0.0.0.x", malformed("a")),
            ("v1.16000.1.160.0.-50000.q.0.0.160.0.0.0.x", malformed("wf")),
            (
                "v1.16000.1.160.0.-50000.q.0.0.2.4294967297.0.0.x",
                malformed("wsq"),
            ),
            ("v1.16000.1.160.0.-50000.q.0.0.2.0.2.0.x", malformed("wzc")),
            ("v1.16000.1.160.0.-50000.q.0.0.0.0.0.1.x", malformed("wneg")),
            (
                "v1.16000.1.160.0.-50000.q.160.0.0.0.0.0.",
                malformed("carry"),
            ),
            (
                "v1.16000.1.160.0.-50000.q.160.0.0.0.0.0.x0000",
                malformed("carry"),
            ),
            (
                "v1.16000.1.160.0.-50000.q.160.0.0.0.0.0.xZ",
                malformed("carry"),
            ),
            (
                "v1.16000.1.18446744073709551615.0.-50000.q.0.0.0.0.0.0.x",
                malformed("frames"),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(Vad::from_state_string(s, 16_000, 1), Err(*want), "{s}");
        }
        let long = format!("{ok}{}", "0".repeat(MAX_STATE_LEN));
        assert_eq!(
            Vad::from_state_string(&long, 16_000, 1),
            Err(VadStateError::TooLong {
                len: long.len(),
                max: MAX_STATE_LEN
            })
        );
        assert_eq!(
            Vad::from_state_string(ok, 16_000, 5),
            Err(VadStateError::Format(FormatError::Channels(5)))
        );
        assert_eq!(
            VadStateError::FormatMismatch {
                sample_rate: 8000,
                channels: 1
            }
            .to_string(),
            "detector state was written for 8000 Hz with 1 channel(s)"
        );
    }
}
