//! The distribution API client (Docker Registry HTTP API v2 / OCI distribution): manifests and
//! blobs, with mirrors, auth challenges, per-registry TLS, retries and resumable blob streams.
//!
//! # Layout
//! - [`client`]: endpoints, agents, the auth handshake, retries, manifest fetches.
//! - [`blob`]: a blob as one resumable `Read` stream.
//! - `auth`: answering 401s (Basic, bearer tokens); [`challenge`], [`credentials`]:
//!   `WWW-Authenticate` parsing and Docker's `config.json`.
//! - [`manifest`], [`platform`]: what the registry serves and which index entry fits this host.
//! - [`retry`]: backoff with jitter; [`rate`]: `max_download_rate`, shared by every download.
//! - [`ranges`]: many byte ranges of a blob per request (partial pulls).

mod auth;
pub mod blob;
pub mod challenge;
pub mod client;
pub mod credentials;
pub mod error;
pub mod manifest;
pub mod platform;
pub mod ranges;
pub mod rate;
pub mod retry;

pub use blob::BlobReader;
pub use client::{Endpoint, FetchedManifest, HttpTimeouts, RegistryClient, RegistrySettings};
pub use credentials::{Credential, Credentials};
pub use error::RegistryError;
pub use platform::Platform;
pub use retry::RetryPolicy;
