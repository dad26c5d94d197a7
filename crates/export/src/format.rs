//! The export formats, their `?format=` names and their media types.

/// One export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"meeting_id":…,"segments":[…]}`, every stored field.
    Json,
    /// SubRip: numbered cues, `HH:MM:SS,mmm` times, the speaker before the text.
    Srt,
    /// WebVTT: `WEBVTT` header, `HH:MM:SS.mmm` times, the speaker as a `<v>` voice span.
    Vtt,
    /// One line per segment: `[HH:MM:SS] speaker: text`.
    Txt,
}

/// A `format` value that names no format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format (json, srt, vtt or txt)")]
pub struct FormatError;

impl Format {
    /// Every format, in the order docs list them.
    pub const ALL: [Format; 4] = [Format::Json, Format::Srt, Format::Vtt, Format::Txt];

    /// Parses a `?format=` value (exact, lowercase).
    pub fn parse(s: &str) -> Result<Format, FormatError> {
        Format::ALL.into_iter().find(|f| f.name() == s).ok_or(FormatError)
    }

    /// The `?format=` name, also the file extension.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Txt => "txt",
        }
    }

    /// The `Content-Type` of the body. SubRip has no registered type; `application/x-subrip`
    /// is what players and browsers recognise.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Srt => "application/x-subrip; charset=utf-8",
            Format::Vtt => "text/vtt; charset=utf-8",
            Format::Txt => "text/plain; charset=utf-8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        for f in Format::ALL {
            assert_eq!(Format::parse(f.name()), Ok(f));
        }
        for bad in ["", "SRT", "webvtt", "json ", "xml"] {
            assert_eq!(Format::parse(bad), Err(FormatError), "{bad:?}");
        }
        assert_eq!(Format::Vtt.content_type(), "text/vtt; charset=utf-8");
    }
}
