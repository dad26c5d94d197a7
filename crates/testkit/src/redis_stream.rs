//! What Earshot wrote to a Redis Stream, read back with `XRANGE - +`: the audio stream
//! `audio:{meeting}:{source}` (one entry per frame: `seq`, `bytes`, `session`, `pcm`) and
//! the transcript stream `transcript:{meeting}` (one `segment` field per entry).

use anyhow::{anyhow, bail, Context};

use crate::RedisServer;

/// One stream entry: its id and its fields in order, values as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The entry id (`<ms>-<seq>`), e.g. a transcript offset.
    pub id: String,
    /// Field names and values, in the order they were written.
    pub fields: Vec<(String, Vec<u8>)>,
}

impl StreamEntry {
    /// The value of field `name`, if present.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }

    /// The value of field `name` as UTF-8 text.
    pub fn text(&self, name: &str) -> anyhow::Result<String> {
        let v = self.field(name).ok_or_else(|| anyhow!("entry {} has no {name} field", self.id))?;
        String::from_utf8(v.to_vec()).with_context(|| format!("entry {}: {name} is not UTF-8", self.id))
    }
}

/// One audio frame as the ingest component stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// The frame's sequence number in its session.
    pub seq: u64,
    /// The PCM bytes.
    pub pcm: Vec<u8>,
}

impl RedisServer {
    /// Every entry of the stream `key` (`XRANGE key - +`); none if it does not exist.
    pub fn xrange(&self, key: &str) -> anyhow::Result<Vec<StreamEntry>> {
        let client = redis::Client::open(self.url())?;
        let mut con = client.get_connection().context("connecting to redis")?;
        let v: redis::Value = redis::cmd("XRANGE").arg(key).arg("-").arg("+").query(&mut con).context("XRANGE")?;
        parse_xrange(v)
    }

    /// The frames of the audio stream `key`, in order.
    pub fn audio_frames(&self, key: &str) -> anyhow::Result<Vec<AudioFrame>> {
        self.xrange(key)?
            .into_iter()
            .map(|e| {
                let seq = e.text("seq")?.parse().with_context(|| format!("entry {}: seq", e.id))?;
                let pcm = e.field("pcm").ok_or_else(|| anyhow!("entry {} has no pcm field", e.id))?.to_vec();
                Ok(AudioFrame { seq, pcm })
            })
            .collect()
    }

    /// Every `pcm` field of the audio stream `key`, in order, concatenated.
    pub fn stored_pcm(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self.audio_frames(key)?.into_iter().flat_map(|f| f.pcm).collect())
    }
}

/// `XRANGE`'s reply: an array of `[id, [field, value, …]]`.
fn parse_xrange(v: redis::Value) -> anyhow::Result<Vec<StreamEntry>> {
    let redis::Value::Array(entries) = v else { bail!("XRANGE answered {v:?}") };
    entries
        .into_iter()
        .map(|e| {
            let redis::Value::Array(parts) = e else { bail!("an XRANGE entry that is not an array: {e:?}") };
            let [redis::Value::BulkString(id), redis::Value::Array(flat)] = &parts[..] else {
                bail!("an XRANGE entry that is not [id, fields]: {parts:?}")
            };
            let id = String::from_utf8_lossy(id).into_owned();
            if flat.len() % 2 != 0 {
                bail!("entry {id}: an odd number of field items");
            }
            let fields = flat
                .chunks(2)
                .map(|pair| match pair {
                    [redis::Value::BulkString(k), redis::Value::BulkString(v)] => {
                        Ok((String::from_utf8_lossy(k).into_owned(), v.clone()))
                    }
                    other => bail!("entry {id}: a field that is not two strings: {other:?}"),
                })
                .collect::<anyhow::Result<_>>()?;
            Ok(StreamEntry { id, fields })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use redis::Value::{Array, BulkString};

    use super::*;

    fn bulk(s: &[u8]) -> redis::Value {
        BulkString(s.to_vec())
    }

    #[test]
    fn parses_entries_with_binary_fields_in_order() {
        let reply = Array(vec![
            Array(vec![bulk(b"1-0"), Array(vec![bulk(b"seq"), bulk(b"0"), bulk(b"pcm"), bulk(&[0xff, 0x00])])]),
            Array(vec![bulk(b"1-1"), Array(vec![bulk(b"segment"), bulk(b"{}")])]),
        ]);
        let entries = parse_xrange(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(entries[0].field("pcm"), Some(&[0xff, 0x00][..]));
        assert_eq!(entries[0].text("seq").unwrap(), "0");
        assert_eq!(entries[1].text("segment").unwrap(), "{}");
        assert!(entries[1].field("pcm").is_none());
        assert!(parse_xrange(Array(vec![])).unwrap().is_empty());
    }

    #[test]
    fn refuses_replies_of_another_shape() {
        assert!(parse_xrange(redis::Value::Nil).is_err());
        assert!(parse_xrange(Array(vec![Array(vec![bulk(b"1-0")])])).is_err());
        assert!(parse_xrange(Array(vec![Array(vec![bulk(b"1-0"), Array(vec![bulk(b"odd")])])])).is_err());
    }
}
