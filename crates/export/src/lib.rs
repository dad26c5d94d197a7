//! Transcript export: a meeting's stored final segments written as JSON, SubRip (SRT),
//! WebVTT or plain text, one segment at a time so a large meeting never has to sit in
//! memory whole (`GET /api/v1/meetings/{id}/transcript?format=…`, docs/http-api.md).
//!
//! Everything here is pure: the transcripts-http component reads the history in pages,
//! puts each segment through [`Reorder`] (history is in arrival order, subtitles want start
//! order) and hands it to a [`Writer`], streaming out whatever text comes back.

pub mod footprint;
mod format;
mod layout;
mod order;
mod page;
mod query;
mod timecode;
mod writer;

pub use format::{Format, FormatError};
pub use layout::{cues, normalize_text, Cue, MAX_CUE_LINES, MAX_LINE_CHARS, MIN_LABEL_BUDGET_CHARS};
pub use order::{Reorder, REORDER_WINDOW};
pub use page::{page_range, parse_page, Page, PageError, PageValue, EXPORT_PAGE_SEGMENTS, PAGE_SCRIPT};
pub use query::{ExportQuery, QueryError};
pub use timecode::{timecode, TimeSeparator};
pub use writer::{speaker_of, ExportedSegment, StoredSegment, Writer, MAX_SPEAKER_CHARS, MIN_CUE_MS};
