//! The capture agent's WAV header reader (`earshot_agent::wav`, what `earshot stream`
//! opens): any file a user points it at.
//!
//! Properties: never panics or allocates from a declared size; an accepted header has a
//! format the ingest protocol takes and leaves the reader inside the input; the writer's
//! header for that format reads back the same.
#![no_main]

use std::io::Cursor;

use earshot_agent::wav;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let Ok(header) = wav::read_header(&mut input) else { return };
    assert!(header.format.validate().is_ok(), "{header:?}");
    assert!(input.position() <= data.len() as u64);
    assert_ne!(header.data_len, Some(0));

    let len = header.data_len.map_or(0, |n| u32::try_from(n).expect("a data size is 32 bits"));
    let canonical = wav::header_bytes(header.format, len);
    let again = wav::read_header(&mut Cursor::new(&canonical[..])).expect("the writer's header reads back");
    assert_eq!(again.format, header.format);
});
