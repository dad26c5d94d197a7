//! Every tuning value of the detector, with its unit and the reason for its value.
//!
//! Levels are RMS relative to 16-bit full scale (32768), so a full-scale square wave is
//! 0 dBFS and a full-scale sine is about -3 dBFS. Conversational speech captured by a
//! headset or laptop microphone sits roughly between -35 and -15 dBFS; an idle
//! microphone in a quiet room between -70 and -55 dBFS.

/// Length of one analysis window, in milliseconds. 10 ms is the customary speech frame:
/// short enough to resolve syllable onsets, long enough (80 samples at 8 kHz) for a
/// meaningful energy and zero-crossing estimate.
pub const ANALYSIS_WINDOW_MS: u32 = 10;

/// Consecutive speech time needed before a segment starts, in milliseconds. Clicks,
/// key presses and door knocks are shorter than 50 ms while a syllable lasts 100–250
/// ms, and because the start is back-dated to the first of those windows no speech is
/// lost to this delay; it only delays the `SpeechStarted` event.
pub const SPEECH_START_MS: u32 = 50;

/// Consecutive non-speech time that ends a segment, in milliseconds. Stop closures,
/// unvoiced consonants and breath pauses inside a phrase are mostly under 300 ms, so a
/// phrase stays one segment. The end is back-dated to the end of the last speech
/// window, so the hangover does not inflate talk time; pauses shorter than this inside
/// a segment do count as talk.
pub const HANGOVER_MS: u32 = 300;

/// How far above the noise floor a window's level must be to count as speech, in dB.
/// 10 dB (about 3x the noise amplitude) is the usual margin for an energy detector:
/// lower and noise fluctuations trigger it, higher and quiet talkers drop out.
pub const SPEECH_MARGIN_DB: i32 = 10;

/// Level below which nothing counts as speech, whatever the noise floor, in dBFS.
/// About 15 dB under quiet captured speech and above the self-noise of an idle
/// microphone, so a very quiet room never produces talk time.
pub const ABSOLUTE_FLOOR_DBFS: i32 = -50;

/// Most zero crossings a speech window may have, per 1000 adjacent-sample pairs.
/// White noise crosses zero on half of the pairs (500) at any sample rate; voiced
/// speech, dominated by its first formants, stays under about 250 even at 8 kHz. With
/// 80 samples per window at 8 kHz the white-noise estimate has a standard deviation of
/// about 56, so 350 rejects almost every noise window and `SPEECH_START_MS` rejects the
/// rest. Unvoiced fricatives (s, sh) are rejected too; the hangover bridges them.
pub const ZCR_CEILING_PER_MILLE: u32 = 350;

/// Noise floor a new detector starts from, in dBFS. With the margin this makes the
/// first threshold -40 dBFS: normal speech is detected from the first window, while
/// moderate stationary noise (up to -40 dBFS) is learnt as noise instead of being
/// taken for speech; in a quiet room the floor falls to the absolute floor within a
/// second (`NOISE_FLOOR_FALL_DB_PER_S`).
pub const INITIAL_NOISE_FLOOR_DBFS: i32 = -50;

/// How fast the noise floor rises towards a louder non-speech window, in dB per second
/// of audio. Slow, so that non-speech windows inside speech (fricatives, trailing
/// syllables) cannot lift the floor into the speech range during a phrase, yet a
/// noisier room is learnt within seconds to tens of seconds.
pub const NOISE_FLOOR_RISE_DB_PER_S: i32 = 1;

/// How fast the noise floor falls towards a quieter non-speech window, in dB per
/// second of audio. Faster than the rise, because a too-high floor loses speech while a
/// too-low one is still guarded by `ABSOLUTE_FLOOR_DBFS`; rate-limited rather than
/// instant so one dropout window cannot reset it.
pub const NOISE_FLOOR_FALL_DB_PER_S: i32 = 10;

/// Level given to a window of digital silence (whose true level is minus infinity), in
/// dBFS. Lower than any non-zero 16-bit window (about -117 dBFS at most 480 samples),
/// so the noise floor's range stays bounded.
pub const SILENCE_LEVEL_DBFS: i32 = -120;
