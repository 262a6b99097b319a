//! The CLI's side of the API: HTTP/1.1 over the agent's unix socket.
//!
//! Written on hyper's connection API (a few dozen lines) because the well-known HTTP clients
//! don't speak to unix sockets.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no agent is listening on {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the agent on {path}: {message}")]
    Http { path: PathBuf, message: String },
    #[error("the agent answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("cannot decode the agent's answer: {0}")]
    Decode(#[from] serde_json::Error),
}

pub struct Client {
    path: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            path: socket.to_path_buf(),
        }
    }

    /// Whether an agent answers on the socket (a stale socket file does not count).
    pub async fn is_up(&self) -> bool {
        UnixStream::connect(&self.path).await.is_ok()
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.path.clone(),
                    source,
                })?;
        let http = |e: hyper::Error| ClientError::Http {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(conn);
        let builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "berth");
        let resp = match body {
            Some(b) => {
                let req = builder
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(b)));
                sender
                    .send_request(req.expect("valid request").map(|b| b.boxed()))
                    .await
            }
            None => {
                sender
                    .send_request(
                        builder
                            .body(Empty::<Bytes>::new().boxed())
                            .expect("valid request"),
                    )
                    .await
            }
        }
        .map_err(http)?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(ClientError::Status {
                status,
                body: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Ok(resp)
    }

    async fn body(&self, resp: Response<Incoming>) -> Result<Bytes, ClientError> {
        resp.into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| ClientError::Http {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        uri: &str,
    ) -> Result<T, ClientError> {
        let resp = self.send(Method::GET, uri, None).await?;
        Ok(serde_json::from_slice(&self.body(resp).await?)?)
    }

    pub async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        uri: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let resp = self
            .send(Method::POST, uri, Some(serde_json::to_vec(body)?))
            .await?;
        Ok(serde_json::from_slice(&self.body(resp).await?)?)
    }

    pub async fn get_text(&self, uri: &str) -> Result<String, ClientError> {
        let resp = self.send(Method::GET, uri, None).await?;
        Ok(String::from_utf8_lossy(&self.body(resp).await?).into_owned())
    }

    /// Streams a newline-delimited body, calling `line` for each line until the agent closes
    /// the stream or `line` returns false.
    pub async fn stream_lines(
        &self,
        uri: &str,
        mut line: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        let mut body = self.send(Method::GET, uri, None).await?.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Http {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
                while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    let l: Vec<u8> = buf.drain(..=i).collect();
                    if !line(String::from_utf8_lossy(&l[..l.len() - 1]).as_ref()) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}
