//! Sending the reply through the `wasi:http` response slot: a whole [`Response`], or a
//! streamed body written as it is produced. A streamed body that fails part-way is dropped
//! without `finish`, which `wasi:http` defines as a corrupted body: the host aborts the
//! response instead of ending it cleanly, so a client never takes half an export for all
//! of it.

use spin_sdk::http::{Fields, OutgoingBody, OutgoingResponse, Response, ResponseOutparam};
use wasi::io::streams::OutputStream;

/// Largest single write to the output stream, in bytes: `blocking-write-and-flush` takes at
/// most 4,096 bytes per call (wasi:io streams).
const MAX_WRITE_BYTES: usize = 4_096;

/// Sends `response` whole.
pub(crate) async fn send_whole(out: ResponseOutparam, mut response: Response) {
    let body = std::mem::take(response.body_mut());
    match OutgoingResponse::try_from(response) {
        Ok(outgoing) => {
            if let Err(e) = out.set_with_body(outgoing, body).await {
                eprintln!("transcripts-http: response body not sent: {e}");
            }
        }
        Err(e) => eprintln!("transcripts-http: response not converted: {e}"),
    }
}

/// A response whose head is sent and whose body is being written.
pub(crate) struct StreamedBody {
    // Field order is drop order: the stream must go before its body.
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
}

impl StreamedBody {
    /// Sends the head (`status`, `headers`) and opens the body.
    pub(crate) fn start(
        out: ResponseOutparam,
        status: u16,
        headers: &[(String, Vec<u8>)],
    ) -> Result<StreamedBody, String> {
        let fields = Fields::from_list(headers).map_err(|e| format!("response headers: {e:?}"))?;
        let response = OutgoingResponse::new(fields);
        response
            .set_status_code(status)
            .map_err(|()| format!("response status {status}"))?;
        let body = response.body().map_err(|()| "response body taken".to_owned())?;
        let stream = body.write().map_err(|()| "response body not writable".to_owned())?;
        out.set(response);
        Ok(StreamedBody {
            stream: Some(stream),
            body: Some(body),
        })
    }

    /// Writes `bytes`, waiting while the client is slower than the export.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let stream = self.stream.as_ref().ok_or("response body finished")?;
        for chunk in bytes.chunks(MAX_WRITE_BYTES) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("response body write: {e:?}"))?;
        }
        Ok(())
    }

    /// Ends the body cleanly.
    pub(crate) fn finish(mut self) -> Result<(), String> {
        drop(self.stream.take());
        let body = self.body.take().ok_or("response body finished")?;
        OutgoingBody::finish(body, None).map_err(|e| format!("response body finish: {e:?}"))
    }
}
