//! Reading the history in pages: one script call returns at most [`EXPORT_PAGE_SEGMENTS`]
//! entries of the meeting's transcript stream in a range, flattened to `id, segment` pairs
//! (the Spin Redis interface flattens nested replies, so the script does the unnesting).

use earshot_protocol::transcript::Segment;

use crate::writer::StoredSegment;

/// Entries read per round trip: 200 segments are ~40 KB typically and at most ~3.5 MB (text
/// ≤ 4 KiB each), so a page never strains the component's memory, while a 10,000-segment
/// meeting (the stream's cap) takes 50 round trips.
pub const EXPORT_PAGE_SEGMENTS: usize = 200;

/// `KEYS[1]`: the transcript stream; `ARGV`: range start (`-` or `(<id>`), range end (`+`
/// or `<id>`), count, segment field. Reply: `id`, `segment` (`nil`: the entry has none) per
/// entry, oldest first; empty when the stream does not exist.
pub const PAGE_SCRIPT: &str = r"
local out = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])) do
  local seg, fields = false, e[2]
  for j = 1, #fields, 2 do
    if fields[j] == ARGV[4] then seg = fields[j + 1] end
  end
  out[#out + 1] = e[1]
  out[#out + 1] = seg
end
return out
";

/// One value of the flattened reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageValue {
    /// `nil` (an entry without a segment field).
    Nil,
    /// An integer (never valid here).
    Int(i64),
    /// A string.
    Bytes(Vec<u8>),
}

/// The range bounds of the page after `cursor` (the last id read; `None`: the first page).
pub fn page_range(cursor: Option<&str>, since: Option<&str>, until: Option<&str>) -> (String, String) {
    let start = match cursor.or(since) {
        Some(after) => format!("({after}"),
        None => "-".to_owned(),
    };
    (start, until.unwrap_or("+").to_owned())
}

/// One page read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// The readable segments, oldest first.
    pub segments: Vec<StoredSegment>,
    /// Offsets of entries holding no readable segment (skipped, for the log).
    pub unreadable: Vec<String>,
    /// The last id read: the next page's cursor (`None`: the page was empty).
    pub last: Option<String>,
    /// Entries read; fewer than asked for means the range is exhausted.
    pub entries: usize,
}

/// A reply that is not the script's shape (the detail is for the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transcript page: {0}")]
pub struct PageError(pub String);

/// Reads the script's reply.
pub fn parse_page(values: Vec<PageValue>) -> Result<Page, PageError> {
    if !values.len().is_multiple_of(2) {
        return Err(PageError(format!("{} values", values.len())));
    }
    let mut page = Page::default();
    let mut values = values.into_iter();
    while let (Some(id), Some(segment)) = (values.next(), values.next()) {
        let PageValue::Bytes(id) = id else {
            return Err(PageError("entry id is not a string".into()));
        };
        let id = String::from_utf8(id).map_err(|_| PageError("entry id is not UTF-8".into()))?;
        page.entries += 1;
        let parsed = match segment {
            PageValue::Bytes(b) => serde_json::from_slice::<Segment>(&b).ok(),
            PageValue::Nil => None,
            PageValue::Int(_) => return Err(PageError("segment is an integer".into())),
        };
        match parsed {
            Some(segment) => page.segments.push(StoredSegment { offset: id.clone(), segment }),
            None => page.unreadable.push(id.clone()),
        }
        page.last = Some(id);
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: &str = r#"{"meeting_id":"m1","source":"mic","text":"hi","is_final":true,"start_ms":0,"end_ms":5}"#;

    fn b(s: &str) -> PageValue {
        PageValue::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn ranges_continue_after_the_cursor_or_since() {
        assert_eq!(page_range(None, None, None), ("-".into(), "+".into()));
        assert_eq!(page_range(None, Some("5-0"), Some("9-0")), ("(5-0".into(), "9-0".into()));
        assert_eq!(page_range(Some("7-1"), Some("5-0"), None), ("(7-1".into(), "+".into()));
    }

    #[test]
    fn pages_keep_readable_segments_and_name_the_rest() {
        let page = parse_page(vec![b("1-0"), b(SEG), b("2-0"), PageValue::Nil, b("3-0"), b("not json")]).unwrap();
        assert_eq!(page.segments.len(), 1);
        assert_eq!(page.segments[0].offset, "1-0");
        assert_eq!(page.unreadable, ["2-0", "3-0"]);
        assert_eq!((page.last.as_deref(), page.entries), (Some("3-0"), 3));
        assert_eq!(parse_page(vec![]).unwrap(), Page::default());
        assert!(parse_page(vec![b("1-0")]).is_err());
        assert!(parse_page(vec![PageValue::Int(1), b(SEG)]).is_err());
    }
}
