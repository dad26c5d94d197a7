//! Transcript history for `/ws/transcript/{id}?since=<offset>`: the segments after `since`
//! read from the meeting's Redis Stream, oldest first, and the seam to live delivery.
//!
//! The seam is the relay's hold (`Control::Hold`/`Release`): the OPEN reply holds and
//! subscribes the channel; the relay calls again once the subscription is effective, and
//! that request reads the stream. Every segment is appended before it is published, so a
//! segment is either already in the stream when it is read (and its live copy, if held,
//! has an id at or below the release point and is dropped) or published after the
//! subscription took effect (held, and delivered after the replay). Hence no gap and no
//! duplicate.
//!
//! Bound: one replay sends at most [`MAX_REPLAY_SEGMENTS`], the newest ones. When more are
//! pending the client gets `history_truncated` naming the first one it receives, exactly
//! as for history trimmed from the stream. Batching over several follow-up requests was
//! rejected: the relay calls again without waiting for the client to drain its bounded
//! send queue (1,024 messages), so a second batch to a slow reader would end it with 4008.

use earshot_protocol::grip::id_after;
use earshot_protocol::transcript::{valid_offset, Segment, TranscriptMessage};

pub(crate) use earshot_protocol::transcript::MAX_REPLAY_SEGMENTS;

/// The history read, atomically (one script, one round trip).
///
/// `KEYS[1]`: the stream; `ARGV[1]`: offset to read after (exclusive); `ARGV[2]`: most
/// entries; `ARGV[3]`: the segment field. Reply (flat): `max-deleted-entry-id` (the newest
/// id `XDEL` removed; `nil` before Redis 7.0), the first retained id (`nil`: empty), the
/// number of entries ever removed, by `XDEL` or trimming (`entries-added` − `length`; `nil`
/// before Redis 7.0), then `id`, `segment` (`nil`: the entry has no such field) per entry,
/// newest first. `XINFO` runs only on an existing key: it fails on a missing one.
pub(crate) const SCRIPT: &str = r"
local key = KEYS[1]
local deleted, first, removed = false, false, false
if redis.call('EXISTS', key) == 1 then
  local info = redis.call('XINFO', 'STREAM', key)
  local length, added = 0, false
  for i = 1, #info, 2 do
    local name, value = info[i], info[i + 1]
    if name == 'max-deleted-entry-id' then
      deleted = value
    elseif name == 'entries-added' then
      added = value
    elseif name == 'length' then
      length = value
    elseif name == 'first-entry' and value then
      first = value[1]
    end
  end
  if added then removed = added - length end
end
local out = { deleted, first, removed }
local entries = redis.call('XREVRANGE', key, '+', '(' .. ARGV[1], 'COUNT', ARGV[2])
for _, e in ipairs(entries) do
  local seg, fields = false, e[2]
  for j = 1, #fields, 2 do
    if fields[j] == ARGV[3] then seg = fields[j + 1] end
  end
  out[#out + 1] = e[1]
  out[#out + 1] = seg
end
return out
";

/// One value of a Redis reply as the host's `execute` flattens it (depth-first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flat {
    Nil,
    Int(i64),
    Bytes(Vec<u8>),
}

/// What [`SCRIPT`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct History {
    /// Entries after the offset, newest first: offset and segment JSON (`None`: the entry
    /// has no segment field).
    pub(crate) entries: Vec<(String, Option<Vec<u8>>)>,
    /// The newest offset `XDEL` removed (`0-0`: none); `None` when Redis does not say
    /// (before 7.0). Trimming does not move it.
    pub(crate) max_deleted: Option<String>,
    /// The oldest offset retained (`None`: the stream is empty or absent).
    pub(crate) first: Option<String>,
    /// Entries ever removed from the stream, by `XDEL` or trimming; `None` when Redis does
    /// not say (before 7.0).
    pub(crate) removed: Option<u64>,
}

/// Reads [`SCRIPT`]'s flattened reply.
pub(crate) fn parse_reply(flat: Vec<Flat>) -> Result<History, String> {
    fn text(value: Flat, what: &str) -> Result<Option<String>, String> {
        match value {
            Flat::Nil => Ok(None),
            Flat::Bytes(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| format!("{what} is not UTF-8")),
            Flat::Int(_) => Err(format!("{what} is an integer")),
        }
    }
    if flat.len() < 3 || !(flat.len() - 3).is_multiple_of(2) {
        return Err(format!("history reply of {} values", flat.len()));
    }
    let mut values = flat.into_iter();
    let max_deleted = text(values.next().expect("checked"), "max-deleted id")?;
    let first = text(values.next().expect("checked"), "first id")?;
    let removed = match values.next().expect("checked") {
        Flat::Nil => None,
        Flat::Int(n) => Some(u64::try_from(n).map_err(|_| "negative removed count")?),
        Flat::Bytes(_) => return Err("removed count is not an integer".into()),
    };
    let mut entries = Vec::with_capacity(values.len() / 2);
    while let (Some(id), Some(segment)) = (values.next(), values.next()) {
        let id = text(id, "entry id")?.ok_or("entry without id")?;
        let segment = match segment {
            Flat::Nil => None,
            Flat::Bytes(b) => Some(b),
            Flat::Int(_) => return Err("segment is an integer".into()),
        };
        entries.push((id, segment));
    }
    Ok(History {
        entries,
        max_deleted,
        first,
        removed,
    })
}

/// How far past the component's clock (unix milliseconds) a `since` offset may lie. Offsets
/// are Redis stream ids stamped with the Redis server's clock, which NTP keeps within well
/// under a second of this host's; a minute absorbs any real skew. An offset beyond it was
/// never issued, and honouring it would hold back every live segment until the clock caught
/// up (the release point drops items at or below it), so it is refused.
pub(crate) const SINCE_CLOCK_LEEWAY_MS: u64 = 60_000;

/// Whether `s` is a resume offset Redis takes and that can have been issued by `now_ms`:
/// `<ms>-<seq>`, both parts 64-bit (the protocol's [`valid_offset`] checks the shape, not the
/// size), `ms` at most [`SINCE_CLOCK_LEEWAY_MS`] ahead of `now_ms`. The bound also refuses the
/// largest stream id, after which Redis can name no range (`XREVRANGE … (<max>` is an error).
pub(crate) fn valid_since(s: &str, now_ms: u64) -> bool {
    valid_offset(s)
        && s.split_once('-').is_some_and(|(ms, seq)| {
            ms.parse::<u64>()
                .is_ok_and(|ms| ms <= now_ms.saturating_add(SINCE_CLOCK_LEEWAY_MS))
                && seq.parse::<u64>().is_ok()
        })
}

/// What a replay sends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Replay {
    /// The messages, in order: `history_truncated` first when due, then the segments
    /// oldest first.
    pub(crate) messages: Vec<TranscriptMessage>,
    /// The release point: the newest offset sent, or `since` when none was.
    pub(crate) after: String,
    /// Offsets of entries skipped because they hold no readable segment.
    pub(crate) unreadable: Vec<String>,
}

/// Plans the replay after `since` from `history` (read with a count of `max + 1`, so one
/// entry too many says more than `max` are pending).
///
/// History is truncated when more than `max` are pending, or when entries after `since`
/// may have been removed from the stream:
/// - `XDEL` removed one after `since` (`max-deleted-entry-id`; exact);
/// - entries were removed (trimming takes the oldest) and the first retained one is after
///   `since`. Redis does not record the newest trimmed id, so this also flags a `since`
///   that was itself the newest entry trimmed, when nothing after it is missing: a
///   needless warning at the exact trim boundary, never a silent gap;
/// - before Redis 7.0 (no removal count): the first retained entry is after `since` and
///   `since` is not `0-0` — a heuristic that can miss a trimmed stream read from `0-0`.
///
/// `first_offset` is the first segment sent (or, when none is left at all, the newest
/// removed offset if known, else `since`).
pub(crate) fn plan(since: &str, history: History, max: usize) -> Replay {
    let History {
        mut entries,
        max_deleted,
        first,
        removed,
    } = history;
    let overflow = entries.len() > max;
    entries.truncate(max);
    entries.reverse();
    let deleted_after = max_deleted
        .as_deref()
        .is_some_and(|deleted| id_after(deleted, since));
    let first_after = first.as_deref().is_some_and(|f| id_after(f, since));
    let trimmed = match removed {
        Some(removed) => removed > 0 && first_after,
        None => since != "0-0" && first_after,
    };
    let truncated = overflow || deleted_after || trimmed;
    let max_deleted = max_deleted.filter(|_| deleted_after);
    let mut messages = Vec::with_capacity(entries.len() + 1);
    if truncated {
        let first_offset = entries
            .first()
            .map(|(id, _)| id.clone())
            .or(max_deleted)
            .unwrap_or_else(|| since.to_owned());
        messages.push(TranscriptMessage::HistoryTruncated {
            since: since.to_owned(),
            first_offset,
        });
    }
    let after = entries
        .last()
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| since.to_owned());
    let mut unreadable = Vec::new();
    for (offset, segment) in entries {
        match segment.and_then(|b| serde_json::from_slice::<Segment>(&b).ok()) {
            Some(segment) => messages.push(TranscriptMessage::Transcript {
                offset: Some(offset),
                segment,
            }),
            None => unreadable.push(offset),
        }
    }
    Replay {
        messages,
        after,
        unreadable,
    }
}
