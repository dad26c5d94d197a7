//! The voice-activity detector: `Vad::from_state_string` (the state a stateless component
//! carries between requests in a header, so a forged value must be refused, not trusted)
//! and `Vad::push` of arbitrary PCM from a capture agent.
//!
//! Input: a format byte, a chunking byte, an optional state string ended by `\n`, then
//! the audio, either raw PCM bytes or run-length groups (`i16 sample, u8 repeat`) so short
//! inputs can reach the detector's 300 ms hangover.
//!
//! Properties: nothing panics or overflows; a state that loads re-serialises to one that
//! loads back equal and fits `MAX_STATE_LEN`; pushing the audio in one piece or in odd
//! chunks with a state round trip after each gives the same events and the same final
//! detector; talk time never exceeds stream time nor decreases.
#![no_main]

use earshot_vad::{Vad, VadEvent, MAX_STATE_LEN};
use libfuzzer_sys::fuzz_target;

/// Rates the detector takes (every ingest rate and two it does not announce).
const RATES: [u32; 8] = [8_000, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000];

/// Audio per input, in bytes: over a second at 48 kHz stereo, past the longest hangover.
const MAX_PCM_BYTES: usize = 256 * 1024;

/// Pushes per input in the chunked run (the last takes the rest), which keeps the state
/// round trips per input bounded and the fuzzer fast.
const MAX_CHUNKS: usize = 64;

fn round_trip(vad: &Vad) -> Vad {
    let s = vad.to_state_string();
    assert!(s.len() < MAX_STATE_LEN, "{s}");
    let back = Vad::from_state_string(&s, vad.sample_rate(), vad.channels()).unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(&back, vad, "{s}");
    back
}

fn check_events(events: &[VadEvent]) {
    for pair in events.windows(2) {
        if let [VadEvent::SpeechStarted { at_ms }, end @ VadEvent::SpeechEnded { .. }] = pair {
            assert_eq!(end.speech_interval().map(|(start, _)| start), Some(*at_ms), "{pair:?}");
        }
    }
    for e in events {
        if let Some((start, end)) = e.speech_interval() {
            assert!(start <= end);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [format, chunking, rest @ ..] = data else { return };
    let (rate, channels) = (RATES[usize::from(format & 7)], if format & 8 != 0 { 2 } else { 1 });

    let (state, audio) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (Some(String::from_utf8_lossy(&rest[..i])), &rest[i + 1..]),
        None => (None, rest),
    };
    if format & 0x40 != 0 {
        // Formats the detector refuses are errors, never panics.
        let odd_rate = u32::from_le_bytes([*chunking, format & 0x3f, 0, 0]) * 7;
        let odd_channels = u16::from(chunking >> 5);
        let _ = Vad::new(odd_rate, odd_channels);
        if let Some(s) = &state {
            let _ = Vad::from_state_string(s, odd_rate, odd_channels);
        }
    }
    let start = match &state {
        Some(s) => match Vad::from_state_string(s, rate, channels) {
            Ok(v) => round_trip(&v),
            Err(_) => return,
        },
        None => Vad::new(rate, channels).expect("a supported format"),
    };

    let mut pcm: Vec<u8> = if format & 0x20 != 0 {
        audio
            .chunks_exact(3)
            .flat_map(|g| {
                let frame: Vec<u8> = [g[0], g[1]].repeat(usize::from(channels));
                frame.repeat(usize::from(g[2]) + 1)
            })
            .collect()
    } else {
        audio.to_vec()
    };
    pcm.truncate(MAX_PCM_BYTES);

    // In one piece.
    let mut whole = start.clone();
    let mut whole_events = whole.push(&pcm);
    whole_events.extend(whole.finish());

    // In chunks, through the state string between them, as the ingest component does.
    let sizes = [1 + usize::from(*chunking) * 7, 1, 3, 2 + usize::from(*chunking) * 13];
    let mut vad = start.clone();
    let mut events = Vec::new();
    let mut talk = vad.talk_ms();
    let mut rest = &pcm[..];
    for (i, size) in sizes.iter().cycle().enumerate() {
        if rest.is_empty() {
            break;
        }
        let size = if i + 1 == MAX_CHUNKS { rest.len() } else { (*size).min(rest.len()) };
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        events.extend(vad.push(chunk));
        assert!(vad.talk_ms() <= vad.stream_ms(), "{vad:?}");
        assert!(vad.talk_ms() >= talk, "{vad:?}");
        talk = vad.talk_ms();
        vad = round_trip(&vad);
    }
    events.extend(vad.finish());
    assert!(vad.talk_ms() >= talk && vad.talk_ms() <= vad.stream_ms(), "{vad:?}");

    check_events(&events);
    assert_eq!(events, whole_events);
    assert_eq!(vad, whole);
});
