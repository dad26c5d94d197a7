//! A tiny RIFF/WAVE reader and writer for 16-bit PCM: the agent reads the header and
//! then streams the `data` chunk without loading the file; the demo generator writes
//! test audio. Only what the ingest protocol takes is accepted (`earshot_protocol::ingest`).

use std::io::{self, Read, Write};

use earshot_protocol::ingest::{MAX_CHANNELS, SAMPLE_RATES};

/// `WAVE_FORMAT_PCM`.
const FORMAT_PCM: u16 = 1;
/// `WAVE_FORMAT_EXTENSIBLE`: the real format is the first two bytes of the sub-format GUID.
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// Size of the classic `fmt ` body (PCM); extensible adds 24 bytes.
const FMT_MIN_BYTES: u32 = 16;
/// Largest `fmt ` chunk read into memory, in bytes: real ones are 16, 18 or 40, so
/// anything near this bound is a corrupt or hostile file, not a format to honour.
const FMT_MAX_BYTES: u32 = 1024;
/// A `data` size meaning "unknown, read to the end" (written by tools that stream WAV to a pipe).
const DATA_SIZE_UNKNOWN: u32 = u32::MAX;
/// Chunks skipped before `data` at most: real files have a handful (`LIST`, `fact`, `bext`);
/// the bound stops a crafted file of empty chunks from spinning forever.
const MAX_CHUNKS_BEFORE_DATA: usize = 1024;

/// The audio format of a stream of interleaved little-endian 16-bit samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmFormat {
    /// Samples per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
}

impl PcmFormat {
    /// 16 kHz mono: what capture agents send by default (DESIGN.md's handshake example).
    pub const MONO_16K: PcmFormat = PcmFormat { sample_rate: 16_000, channels: 1 };

    /// Checks the format against what the ingest protocol takes.
    pub fn validate(self) -> Result<Self, WavError> {
        if !SAMPLE_RATES.contains(&self.sample_rate) {
            return Err(WavError::UnsupportedSampleRate(self.sample_rate));
        }
        if !(1..=MAX_CHANNELS).contains(&u32::from(self.channels)) {
            return Err(WavError::UnsupportedChannels(self.channels));
        }
        Ok(self)
    }

    /// Bytes of one sample frame (one sample of every channel).
    pub fn block_align(self) -> usize {
        2 * usize::from(self.channels)
    }

    /// Bytes of one second of audio.
    pub fn bytes_per_second(self) -> u64 {
        u64::from(self.sample_rate) * self.block_align() as u64
    }
}

/// Why a WAV header was refused.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// Reading failed.
    #[error("reading: {0}")]
    Io(#[from] io::Error),
    /// The input ended inside the header.
    #[error("truncated WAV header")]
    Truncated,
    /// Not `RIFF….WAVE`.
    #[error("not a RIFF/WAVE file")]
    NotWave,
    /// Big-endian RIFX or 64-bit RF64.
    #[error("{0} files are not supported (write a plain little-endian RIFF WAV)")]
    UnsupportedContainer(&'static str),
    /// `data` came before `fmt `, or never came.
    #[error("no `{0}` chunk")]
    MissingChunk(&'static str),
    /// A `fmt ` chunk too short or too long to be real.
    #[error("malformed `fmt ` chunk ({0} bytes)")]
    BadFmt(u32),
    /// Not integer PCM (e.g. float, A-law, ADPCM).
    #[error("unsupported WAV encoding (format tag {0:#06x}); only 16-bit integer PCM is accepted")]
    UnsupportedEncoding(u16),
    /// Not 16 bits per sample.
    #[error("unsupported sample size: {0} bits; only 16-bit PCM is accepted")]
    UnsupportedBits(u16),
    /// A sample rate the protocol does not take.
    #[error("unsupported sample rate: {0} Hz (accepted: {rates})", rates = rates())]
    UnsupportedSampleRate(u32),
    /// More channels than the protocol takes.
    #[error("unsupported channel count: {0} (accepted: 1..={MAX_CHANNELS})")]
    UnsupportedChannels(u16),
    /// `block_align` disagrees with the channel count.
    #[error("inconsistent `fmt ` chunk: block_align {0} for {1} channel(s) of 16 bits")]
    BadBlockAlign(u16, u16),
    /// Too many chunks before `data`.
    #[error("more than {MAX_CHUNKS_BEFORE_DATA} chunks before `data`")]
    TooManyChunks,
}

fn rates() -> String {
    SAMPLE_RATES.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// A parsed header: the format and where the samples are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavHeader {
    /// The samples' format.
    pub format: PcmFormat,
    /// Bytes of the `data` chunk, or `None` when the writer did not know (read to the end).
    pub data_len: Option<u64>,
}

/// Reads a WAV header from `input`, leaving it positioned at the first sample.
pub fn read_header(input: &mut impl Read) -> Result<WavHeader, WavError> {
    let mut riff = [0u8; 12];
    read_full(input, &mut riff)?;
    match &riff[0..4] {
        b"RIFF" => {}
        b"RIFX" => return Err(WavError::UnsupportedContainer("big-endian RIFX")),
        b"RF64" => return Err(WavError::UnsupportedContainer("RF64")),
        _ => return Err(WavError::NotWave),
    }
    if &riff[8..12] != b"WAVE" {
        return Err(WavError::NotWave);
    }
    let mut format = None;
    for _ in 0..MAX_CHUNKS_BEFORE_DATA {
        let mut head = [0u8; 8];
        match read_full(input, &mut head) {
            Err(WavError::Truncated) => return Err(WavError::MissingChunk(if format.is_some() { "data" } else { "fmt " })),
            r => r?,
        }
        let id: [u8; 4] = head[0..4].try_into().expect("4 bytes");
        let size = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        match &id {
            b"fmt " => {
                if !(FMT_MIN_BYTES..=FMT_MAX_BYTES).contains(&size) {
                    return Err(WavError::BadFmt(size));
                }
                let mut body = vec![0u8; size as usize];
                read_full(input, &mut body)?;
                skip(input, u64::from(size % 2))?;
                format = Some(parse_fmt(&body)?);
            }
            b"data" => {
                let format = format.ok_or(WavError::MissingChunk("fmt "))?;
                // Some streaming writers put 0 here and never come back to fix it.
                let data_len = (size != DATA_SIZE_UNKNOWN && size != 0).then_some(u64::from(size));
                return Ok(WavHeader { format, data_len });
            }
            // LIST, fact, bext, cue, …: not audio. Chunks are padded to even sizes.
            _ => skip(input, u64::from(size) + u64::from(size % 2))?,
        }
    }
    Err(WavError::TooManyChunks)
}

fn parse_fmt(body: &[u8]) -> Result<PcmFormat, WavError> {
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    let mut tag = u16_at(0);
    let channels = u16_at(2);
    let sample_rate = u32::from_le_bytes(body[4..8].try_into().expect("4 bytes"));
    let block_align = u16_at(12);
    let bits = u16_at(14);
    if tag == FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4) then the sub-format GUID, whose first
        // two bytes are the format tag.
        if body.len() < 40 {
            return Err(WavError::BadFmt(body.len() as u32));
        }
        tag = u16_at(24);
    }
    if tag != FORMAT_PCM {
        return Err(WavError::UnsupportedEncoding(tag));
    }
    if bits != 16 {
        return Err(WavError::UnsupportedBits(bits));
    }
    let format = PcmFormat { sample_rate, channels }.validate()?;
    if usize::from(block_align) != format.block_align() {
        return Err(WavError::BadBlockAlign(block_align, channels));
    }
    Ok(format)
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<(), WavError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => WavError::Truncated,
        _ => WavError::Io(e),
    })
}

fn skip(input: &mut impl Read, n: u64) -> Result<(), WavError> {
    let skipped = io::copy(&mut input.take(n), &mut io::sink())?;
    if skipped < n {
        return Err(WavError::Truncated);
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes, stopping early only at the end of input.
pub fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The 44-byte header of a canonical PCM WAV holding `data_len` bytes of samples.
pub fn header_bytes(format: PcmFormat, data_len: u32) -> [u8; 44] {
    let block_align = format.block_align() as u16;
    let byte_rate = format.sample_rate * u32::from(block_align);
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36u32.saturating_add(data_len)).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&FMT_MIN_BYTES.to_le_bytes());
    h[20..22].copy_from_slice(&FORMAT_PCM.to_le_bytes());
    h[22..24].copy_from_slice(&format.channels.to_le_bytes());
    h[24..28].copy_from_slice(&format.sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// Writes a canonical PCM WAV of `samples` (interleaved).
pub fn write_wav(out: &mut impl Write, format: PcmFormat, samples: &[i16]) -> io::Result<()> {
    let data_len = u32::try_from(samples.len() * 2)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "more audio than a WAV file holds (4 GiB)"))?;
    out.write_all(&header_bytes(format, data_len))?;
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    out.write_all(&bytes)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    const MONO_16K: PcmFormat = PcmFormat { sample_rate: 16_000, channels: 1 };

    fn wav(format: PcmFormat, pcm: &[u8]) -> Vec<u8> {
        let mut v = header_bytes(format, pcm.len() as u32).to_vec();
        v.extend_from_slice(pcm);
        v
    }

    fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = id.to_vec();
        v.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v.extend_from_slice(body);
        if body.len() % 2 == 1 {
            v.push(0);
        }
        v
    }

    fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = chunks.concat();
        let mut v = b"RIFF".to_vec();
        v.extend_from_slice(&(4 + body.len() as u32).to_le_bytes());
        v.extend_from_slice(b"WAVE");
        v.extend_from_slice(&body);
        v
    }

    fn fmt(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut v = Vec::new();
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        v.extend_from_slice(&align.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v
    }

    #[test]
    fn round_trips_a_written_file_and_leaves_the_reader_at_the_samples() {
        let pcm: Vec<u8> = (0..200u8).collect();
        let mut input = Cursor::new(wav(MONO_16K, &pcm));
        let h = read_header(&mut input).unwrap();
        assert_eq!(h, WavHeader { format: MONO_16K, data_len: Some(200) });
        let mut rest = Vec::new();
        input.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, pcm);
    }

    #[test]
    fn skips_unknown_chunks_including_odd_sized_ones() {
        let file = riff(&[
            chunk(b"LIST", b"odd"),
            chunk(b"fmt ", &fmt(1, 2, 48_000, 16)),
            chunk(b"fact", &[1, 2, 3, 4]),
            chunk(b"data", &[9, 9, 9, 9]),
        ]);
        let mut input = Cursor::new(file);
        let h = read_header(&mut input).unwrap();
        assert_eq!(h.format, PcmFormat { sample_rate: 48_000, channels: 2 });
        assert_eq!(h.data_len, Some(4));
        let mut rest = Vec::new();
        input.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, [9, 9, 9, 9]);
    }

    #[test]
    fn accepts_extensible_pcm_and_unknown_data_size() {
        let mut body = fmt(FORMAT_EXTENSIBLE, 1, 16_000, 16);
        body.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        body.extend_from_slice(&16u16.to_le_bytes()); // valid bits
        body.extend_from_slice(&4u32.to_le_bytes()); // channel mask
        body.extend_from_slice(&1u16.to_le_bytes()); // sub-format: PCM …
        body.extend_from_slice(&[0u8; 14]); // … rest of the GUID
        let mut file = riff(&[chunk(b"fmt ", &body)]);
        file.extend_from_slice(b"data");
        file.extend_from_slice(&u32::MAX.to_le_bytes());
        let h = read_header(&mut Cursor::new(file)).unwrap();
        assert_eq!(h, WavHeader { format: MONO_16K, data_len: None });
    }

    #[test]
    fn refuses_what_the_protocol_does_not_take() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (riff(&[chunk(b"fmt ", &fmt(1, 1, 16_000, 8)), chunk(b"data", &[0; 4])]), "8 bits"),
            (riff(&[chunk(b"fmt ", &fmt(3, 1, 16_000, 32)), chunk(b"data", &[0; 4])]), "format tag 0x0003"),
            (riff(&[chunk(b"fmt ", &fmt(1, 1, 11_025, 16)), chunk(b"data", &[0; 4])]), "11025 Hz"),
            (riff(&[chunk(b"fmt ", &fmt(1, 6, 16_000, 16)), chunk(b"data", &[0; 4])]), "channel count: 6"),
            (riff(&[chunk(b"data", &[0; 4])]), "no `fmt ` chunk"),
            (riff(&[chunk(b"fmt ", &fmt(1, 1, 16_000, 16))]), "no `data` chunk"),
            (riff(&[chunk(b"fmt ", &[1, 0, 1, 0])]), "malformed `fmt `"),
            (b"RIFX\0\0\0\0WAVE".to_vec(), "RIFX"),
            (b"OggS\0\0\0\0\0\0\0\0".to_vec(), "not a RIFF/WAVE"),
            (b"RIFF".to_vec(), "truncated"),
            (Vec::new(), "truncated"),
        ];
        for (file, expected) in cases {
            let err = read_header(&mut Cursor::new(file)).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should mention {expected:?}");
        }
    }

    #[test]
    fn never_panics_on_prefixes_or_corruption() {
        let file = riff(&[
            chunk(b"LIST", b"INFOabc"),
            chunk(b"fmt ", &fmt(1, 2, 44_100, 16)),
            chunk(b"data", &[1, 2, 3, 4, 5, 6, 7, 8]),
        ]);
        for end in 0..file.len() {
            let _ = read_header(&mut Cursor::new(&file[..end]));
        }
        // Every single-byte corruption, with a few values each (a poor man's fuzzer).
        for i in 0..file.len() {
            for v in [0x00, 0x01, 0x7f, 0xff] {
                let mut bad = file.clone();
                bad[i] = v;
                let _ = read_header(&mut Cursor::new(bad));
            }
        }
    }

    #[test]
    fn a_huge_unknown_chunk_is_skipped_without_allocating() {
        // Declares 4 GiB of LIST but ends: truncated, not an allocation failure.
        let mut file = riff(&[chunk(b"fmt ", &fmt(1, 1, 16_000, 16))]);
        file.extend_from_slice(b"LIST");
        file.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
        assert!(matches!(read_header(&mut Cursor::new(file)), Err(WavError::Truncated)));
    }
}
