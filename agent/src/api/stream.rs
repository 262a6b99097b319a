//! Response bodies written to the socket as they are serialised.
//!
//! A status list of 10,000 containers is megabytes of JSON; built whole it was a second copy of
//! every status and the document beside it, per request. Here a blocking task serialises into
//! chunks of [`CHUNK`] bytes and hands each to the connection through a bounded channel: it
//! waits while the reader is slow, so a response holds a few chunks whatever its size, and it
//! stops when the reader goes away. The bytes on the wire are the same as before (a JSON
//! document, or one JSON object per line), sent chunked.

use std::io::{self, Write};

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::mpsc;

/// What one chunk holds before it is handed to the connection.
pub const CHUNK: usize = 32 * 1024;
/// Chunks serialised ahead of the reader.
const AHEAD: usize = 2;

/// `value` as a JSON document (`application/json`), streamed.
pub fn json<T: Serialize + Send + 'static>(value: T) -> Response {
    body(mime::JSON, move |w| {
        serde_json::to_writer(w, &value).map_err(io::Error::from)
    })
}

/// A shared value (the published status list) as a JSON document, streamed without a copy.
pub fn json_shared<T: Serialize + Send + Sync + 'static>(value: std::sync::Arc<T>) -> Response {
    body(mime::JSON, move |w| {
        serde_json::to_writer(w, &*value).map_err(io::Error::from)
    })
}

/// Each item as one line of JSON (`application/x-ndjson`), streamed.
pub fn ndjson<T: Serialize>(items: impl IntoIterator<Item = T> + Send + 'static) -> Response {
    body(mime::NDJSON, move |w| ndjson_lines(w, items))
}

/// Each item as one line of JSON.
pub fn ndjson_lines<T: Serialize>(
    w: &mut impl Write,
    items: impl IntoIterator<Item = T>,
) -> io::Result<()> {
    for item in items {
        serde_json::to_writer(&mut *w, &item)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

mod mime {
    pub const JSON: &str = "application/json";
    pub const NDJSON: &str = "application/x-ndjson";
}

fn body(
    content_type: &'static str,
    write: impl FnOnce(&mut Chunks) -> io::Result<()> + Send + 'static,
) -> Response {
    let stream = chunks(write);
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The chunks `write` produces, as a stream of body frames. A failed write ends the body
/// early, which the reader sees as a truncated response, never as a complete wrong one.
pub fn chunks(
    write: impl FnOnce(&mut Chunks) -> io::Result<()> + Send + 'static,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel(AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut w = Chunks {
            buf: Vec::with_capacity(CHUNK),
            tx,
        };
        let result = write(&mut w).and_then(|_| w.send());
        if let Err(e) = result {
            // The reader is gone (nothing to tell) or serialising failed (tell the connection).
            let _ = w.tx.blocking_send(Err(e));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
}

/// A writer that hands the connection a chunk whenever [`CHUNK`] bytes are ready.
pub struct Chunks {
    buf: Vec<u8>,
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl Chunks {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away"))
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    async fn collect(
        s: impl futures_util::Stream<Item = io::Result<Bytes>>,
    ) -> (Vec<usize>, Vec<u8>, Option<io::Error>) {
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        let mut s = std::pin::pin!(s);
        while let Some(c) = s.next().await {
            match c {
                Ok(c) => {
                    sizes.push(c.len());
                    all.extend_from_slice(&c);
                }
                Err(e) => return (sizes, all, Some(e)),
            }
        }
        (sizes, all, None)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_document_arrives_whole_in_bounded_chunks() {
        let items: Vec<String> = (0..20_000).map(|i| format!("item number {i}")).collect();
        let expected = serde_json::to_vec(&items).unwrap();
        let (sizes, all, err) = collect(chunks(move |w| {
            serde_json::to_writer(w, &items).map_err(io::Error::from)
        }))
        .await;
        assert!(err.is_none());
        assert_eq!(all, expected);
        assert!(sizes.len() > 5, "{sizes:?}");
        // A chunk is sent once it reaches CHUNK: at most CHUNK plus the last write.
        assert!(sizes.iter().all(|&s| s < CHUNK + 1024), "{sizes:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lines_are_json_objects() {
        let (_, all, err) = collect(chunks(|w| ndjson_lines(w, [1, 2, 3]))).await;
        assert!(err.is_none());
        assert_eq!(all, b"1\n2\n3\n");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_stops_when_the_reader_goes_away() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let s = chunks(move |w| {
            let mut written = 0usize;
            let r = (|| -> io::Result<()> {
                loop {
                    w.write_all(&[b'x'; 1024])?;
                    written += 1024;
                }
            })();
            done_tx.send(written).unwrap();
            r
        });
        let mut s = Box::pin(s);
        assert!(s.next().await.unwrap().is_ok());
        drop(s);
        let written = tokio::task::spawn_blocking(move || {
            done_rx.recv_timeout(std::time::Duration::from_secs(10))
        })
        .await
        .unwrap()
        .expect("the writer never noticed the reader was gone");
        // It stopped after the chunks the channel holds, not after an endless document.
        assert!(written <= (AHEAD + 3) * CHUNK, "{written}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_serialisation_ends_the_body_with_an_error() {
        let (_, _, err) = collect(chunks(|w| {
            w.write_all(b"[1,")?;
            Err(io::Error::other("cannot serialise"))
        }))
        .await;
        assert_eq!(err.unwrap().to_string(), "cannot serialise");
    }
}
