//! Deepgram's live-streaming messages: the JSON the server sends on `/v1/listen` and the
//! control messages the client sends. Times on the wire are seconds from the socket's
//! first audio byte.

use serde::Deserialize;

/// A message from Deepgram, by its `type`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub(crate) enum ServerMessage {
    /// A transcript of one span of the audio, interim or final.
    Results(Results),
    /// A word gap of `utterance_end_ms` after the last final word.
    UtteranceEnd(UtteranceEnd),
    /// Voice activity started (`vad_events=true`).
    SpeechStarted(SpeechStarted),
    /// Request summary; Deepgram sends it after `CloseStream`, right before it closes.
    Metadata(Metadata),
    /// Anything newer than this bridge (logged, ignored).
    #[serde(other)]
    Unknown,
}

/// `Results`: a transcript of `[start, start + duration)` seconds of the socket's audio.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct Results {
    /// Start of the span, in seconds from the socket's first audio byte.
    #[serde(default)]
    pub(crate) start: f64,
    /// Length of the span, in seconds.
    #[serde(default)]
    pub(crate) duration: f64,
    /// `true`: Deepgram will not revise this span again.
    #[serde(default)]
    pub(crate) is_final: bool,
    /// `true`: the endpointer saw the utterance end with this span.
    #[serde(default)]
    pub(crate) speech_final: bool,
    /// `true`: this final was forced by our `Finalize`.
    #[serde(default)]
    pub(crate) from_finalize: bool,
    /// The alternatives of the (only) channel.
    pub(crate) channel: Channel,
}

/// `channel` of a `Results` message.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct Channel {
    /// Best first; the bridge uses the first.
    #[serde(default)]
    pub(crate) alternatives: Vec<Alternative>,
}

/// One alternative transcript.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct Alternative {
    /// The transcript (empty for a span without speech).
    #[serde(default)]
    pub(crate) transcript: String,
    /// Confidence in the transcript, 0 to 1.
    pub(crate) confidence: Option<f64>,
    /// Per-word times.
    #[serde(default)]
    pub(crate) words: Vec<WireWord>,
}

/// One word of an alternative.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct WireWord {
    /// The word, lower case, no punctuation.
    pub(crate) word: String,
    /// Start, seconds from the socket's first audio byte.
    pub(crate) start: f64,
    /// End, seconds from the socket's first audio byte.
    pub(crate) end: f64,
    /// Confidence, 0 to 1.
    pub(crate) confidence: Option<f64>,
    /// The word as written (with `punctuate=true`).
    pub(crate) punctuated_word: Option<String>,
    /// Speaker number (with `diarize=true`).
    pub(crate) speaker: Option<u32>,
}

/// `UtteranceEnd`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct UtteranceEnd {
    /// End of the last final word, seconds from the socket's first audio byte.
    pub(crate) last_word_end: Option<f64>,
}

/// `SpeechStarted`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct SpeechStarted {
    /// When speech started, seconds from the socket's first audio byte.
    pub(crate) timestamp: Option<f64>,
}

/// `Metadata`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct Metadata {
    /// Deepgram's id of the request (quote it to Deepgram's support).
    pub(crate) request_id: Option<String>,
    /// Seconds of audio Deepgram received on this socket.
    pub(crate) duration: Option<f64>,
}

/// `{"type":"KeepAlive"}`: keeps an idle socket open.
pub(crate) const KEEP_ALIVE: &str = r#"{"type":"KeepAlive"}"#;
/// `{"type":"Finalize"}`: finalise the audio received so far.
pub(crate) const FINALIZE: &str = r#"{"type":"Finalize"}"#;
/// `{"type":"CloseStream"}`: send the last results and close.
pub(crate) const CLOSE_STREAM: &str = r#"{"type":"CloseStream"}"#;

/// Parses one text frame from Deepgram.
pub(crate) fn parse(text: &str) -> Result<ServerMessage, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_parse_with_words() {
        let text = r#"{"type":"Results","channel_index":[0,1],"duration":1.5,"start":2.25,
            "is_final":true,"speech_final":false,"channel":{"alternatives":[{"transcript":"Hi there.",
            "confidence":0.98,"words":[{"word":"hi","start":2.3,"end":2.5,"confidence":0.99,
            "punctuated_word":"Hi"},{"word":"there","start":2.6,"end":3.0,"confidence":0.97,
            "punctuated_word":"there.","speaker":1}]}]},"metadata":{"request_id":"r"}}"#;
        let ServerMessage::Results(results) = parse(text).unwrap() else {
            panic!("not results");
        };
        assert!(results.is_final && !results.speech_final && !results.from_finalize);
        assert_eq!((results.start, results.duration), (2.25, 1.5));
        let best = &results.channel.alternatives[0];
        assert_eq!(best.transcript, "Hi there.");
        assert_eq!(best.words[1].punctuated_word.as_deref(), Some("there."));
        assert_eq!(best.words[1].speaker, Some(1));
    }

    #[test]
    fn other_messages_parse_and_unknown_ones_are_tolerated() {
        assert_eq!(
            parse(r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":3.1}"#).unwrap(),
            ServerMessage::UtteranceEnd(UtteranceEnd {
                last_word_end: Some(3.1)
            })
        );
        assert!(matches!(
            parse(r#"{"type":"SpeechStarted","channel":[0],"timestamp":0.5}"#).unwrap(),
            ServerMessage::SpeechStarted(SpeechStarted { timestamp: Some(_) })
        ));
        assert!(matches!(
            parse(r#"{"type":"Metadata","request_id":"abc","duration":4.0,"channels":1}"#).unwrap(),
            ServerMessage::Metadata(_)
        ));
        assert_eq!(
            parse(r#"{"type":"SomethingNew","x":1}"#).unwrap(),
            ServerMessage::Unknown
        );
        assert!(parse("not json").is_err());
    }
}
