//! `GET /api/v1/meetings/{id}/transcript?format=json|srt|vtt|txt[&since=…][&until=…]`:
//! the meeting's stored finals, read in pages of [`EXPORT_PAGE_SEGMENTS`], put in start
//! order ([`Reorder`]) and streamed through the format's [`Writer`]; memory stays bounded
//! whatever the meeting's length. The first page is read before the head is sent, so a
//! failing Redis is a 503 and not a truncated 200.

use earshot_component_common::effects::EffectError;
use earshot_component_common::request_log::RequestLog;
use earshot_export::{
    page_range, parse_page, ExportQuery, Page, PageValue, Reorder, StoredSegment, Writer,
    EXPORT_PAGE_SEGMENTS, PAGE_SCRIPT, REORDER_WINDOW,
};
use earshot_protocol::transcript::{transcript_stream_key, SEGMENT_FIELD};
use earshot_protocol::MeetingId;
use spin_sdk::http::ResponseOutparam;
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};

use crate::api::ApiError;
use crate::body::StreamedBody;
use crate::store;

/// Body bytes gathered before a write: a few segments' worth per write instead of one
/// write per cue, and never more than this held back.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// An export whose request is valid and whose first page is read.
pub(crate) struct Export {
    meeting: MeetingId,
    query: ExportQuery,
    /// `None` without Redis: nothing was ever stored, the export is empty.
    redis: Option<Connection>,
    first: Page,
}

impl Export {
    /// Checks the meeting exists and reads the first page.
    pub(crate) fn prepare(meeting: MeetingId, query: ExportQuery) -> Result<Export, ApiError> {
        if !store::known(&store::kv()?, &meeting)? {
            return Err(ApiError::UnknownMeeting);
        }
        let url = store::redis_url()?;
        let redis = if url.is_empty() {
            None
        } else {
            Some(store::redis(&url).map_err(|e| ApiError::Unavailable(e.0))?)
        };
        let first = match &redis {
            Some(conn) => read_page(conn, &meeting, &query, None)
                .map_err(|e| ApiError::Unavailable(e.0))?,
            None => Page::default(),
        };
        Ok(Export {
            meeting,
            query,
            redis,
            first,
        })
    }

    /// Sends the export and fills the request log line, which it emits.
    pub(crate) fn send(self, out: ResponseOutparam, mut log: RequestLog) {
        let format = self.query.format;
        log.set("format", format.name());
        let headers = [
            ("content-type".to_owned(), format.content_type().as_bytes().to_vec()),
            ("cache-control".to_owned(), b"no-store".to_vec()),
            (
                "content-disposition".to_owned(),
                format!("attachment; filename=\"{}.{}\"", self.meeting, format.name()).into_bytes(),
            ),
        ];
        let body = match StreamedBody::start(out, 200, &headers) {
            Ok(body) => body,
            Err(detail) => {
                log.set("detail", detail);
                log.emit(500);
                return;
            }
        };
        match self.stream(body) {
            Ok(summary) => {
                log.set("segments", summary.segments.to_string());
                if summary.unreadable > 0 {
                    log.set("unreadable_entries", summary.unreadable.to_string());
                }
                log.emit(200);
            }
            Err(detail) => {
                // The head is out: the status stays 200, the body is aborted (see body.rs).
                log.set("detail", detail);
                log.set("reason", "export aborted");
                log.emit(500);
            }
        }
    }

    fn stream(self, mut body: StreamedBody) -> Result<Summary, String> {
        let mut writer = Writer::new(self.query.format, &self.meeting);
        let mut reorder: Reorder<StoredSegment> = Reorder::new(REORDER_WINDOW);
        let mut buf = writer.header().into_bytes();
        let mut unreadable = 0usize;
        let mut page = self.first;
        loop {
            unreadable += page.unreadable.len();
            for stored in page.segments {
                let (start, end) = (stored.segment.start_ms, stored.segment.end_ms);
                if let Some(next) = reorder.push(start, end, stored) {
                    buf.extend_from_slice(writer.segment(&next).as_bytes());
                }
            }
            if buf.len() >= WRITE_BUFFER_BYTES {
                body.write(&buf)?;
                buf.clear();
            }
            let exhausted = page.entries < EXPORT_PAGE_SEGMENTS;
            let (Some(conn), Some(cursor), false) = (&self.redis, page.last, exhausted) else {
                break;
            };
            page = read_page(conn, &self.meeting, &self.query, Some(&cursor)).map_err(|e| e.0)?;
        }
        while let Some(next) = reorder.pop() {
            buf.extend_from_slice(writer.segment(&next).as_bytes());
            if buf.len() >= WRITE_BUFFER_BYTES {
                body.write(&buf)?;
                buf.clear();
            }
        }
        buf.extend_from_slice(writer.footer().as_bytes());
        body.write(&buf)?;
        body.finish()?;
        Ok(Summary {
            segments: writer.segments(),
            unreadable,
        })
    }
}

/// What an export sent.
struct Summary {
    segments: u64,
    unreadable: usize,
}

/// The page of history after `cursor` within the query's range.
fn read_page(
    conn: &Connection,
    meeting: &MeetingId,
    query: &ExportQuery,
    cursor: Option<&str>,
) -> Result<Page, EffectError> {
    let (start, end) = page_range(cursor, query.since.as_deref(), query.until.as_deref());
    let key = transcript_stream_key(meeting);
    let count = EXPORT_PAGE_SEGMENTS.to_string();
    let args: Vec<RedisParameter> = [PAGE_SCRIPT, "1", &key, &start, &end, &count, SEGMENT_FIELD]
        .iter()
        .map(|a| RedisParameter::Binary(a.as_bytes().to_vec()))
        .collect();
    let reply = conn
        .execute("EVAL", &args)
        .map_err(|e| EffectError(format!("redis EVAL (export page): {e}")))?;
    let values = reply
        .into_iter()
        .map(|v| match v {
            RedisResult::Nil => PageValue::Nil,
            RedisResult::Int64(i) => PageValue::Int(i),
            RedisResult::Binary(b) => PageValue::Bytes(b),
            RedisResult::Status(s) => PageValue::Bytes(s.into_bytes()),
        })
        .collect();
    parse_page(values).map_err(|e| EffectError(e.to_string()))
}
