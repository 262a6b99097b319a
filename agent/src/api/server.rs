//! The agent's API: HTTP/JSON on a unix socket that only root can open (mode 0600, inside the
//! 0700 run dir), and that serves only a peer the kernel says is root ([`RootPeers`]).
//!
//! It serves whatever the reconciler last published (a watch channel of statuses, the event
//! log, metrics) and forwards `plan` and `apply` requests to the loop; it never touches
//! containers itself.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::stream;
use crate::events::EventLog;
use crate::metrics::Metrics;
use crate::operations::{ImageOp, ImageReply, Prune};
use crate::status::{ApplyResult, ContainerStatus, PlanView, PruneReport};

/// What the API asks of the reconcile loop.
pub enum ApiRequest {
    Plan {
        reply: oneshot::Sender<PlanView>,
    },
    Apply {
        options: ApplyOptions,
        reply: oneshot::Sender<ApplyResult>,
    },
    Image {
        op: ImageOp,
        reply: oneshot::Sender<Result<ImageReply, String>>,
    },
    Prune {
        prune: Prune,
        reply: oneshot::Sender<Result<PruneReport, String>>,
    },
}

#[derive(Debug, Clone, Default, serde::Serialize, Deserialize)]
pub struct ApplyOptions {
    /// Wait until converged (or failed) instead of returning after one pass.
    pub wait: bool,
    pub timeout_ms: Option<u64>,
    /// Override update locks.
    pub force: bool,
}

#[derive(Clone)]
pub struct ApiState {
    pub statuses: watch::Receiver<Arc<Vec<ContainerStatus>>>,
    pub events: Arc<EventLog>,
    pub metrics: Arc<Metrics>,
    pub requests: mpsc::Sender<ApiRequest>,
    /// The spec repository, when the config has a `[source]`.
    pub source: Option<crate::source::git::service::SourceHandle>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/ping", get(|| async { "ok" }))
        .route("/v1/containers", get(list))
        .route("/v1/containers/{name}", get(one))
        .route("/v1/events", get(events))
        .route("/v1/plan", get(plan))
        .route("/v1/apply", post(apply))
        .route("/v1/prune", post(prune))
        .route("/v1/images", post(image_op))
        .route("/metrics", get(metrics))
        .route("/v1/source", get(source_status))
        .route("/v1/source/import", post(source_import))
        .with_state(state)
}

/// Binds the socket (replacing a stale one), restricts it to root, and serves until
/// `shutdown` resolves.
pub async fn serve(
    socket: &Path,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Bound inside a dir only root can enter (made so here, through one fd, before the bind):
    // the socket is never reachable by anyone else, not even for the instant between bind,
    // whose mode follows the umask, and the chmod below.
    if let Some(dir) = socket.parent() {
        crate::fsutil::ensure_private_dir(dir)?;
    }
    // The lock on the state dir guarantees no other agent of ours is alive: a socket file
    // still here is stale.
    crate::fsutil::remove_file_if_exists(socket)?;
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let listener = RootPeers {
        inner: listener,
        uid: rustix::process::geteuid().as_raw(),
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The API's listener: a connection is served only when the kernel's credentials of its peer
/// (SO_PEERCRED, taken at connect) name the agent's own uid, root. The socket's mode and dir
/// keep everyone else out already; this still holds where they do not: a process that is not
/// root but has CAP_DAC_OVERRIDE (a backup or monitoring agent), a socket bind-mounted
/// elsewhere, a run dir an admin opened up. A refused peer gets a 403 it can show, then EOF.
struct RootPeers {
    inner: UnixListener,
    uid: u32,
}

/// What a refused peer reads.
const NOT_ROOT_REPLY: &[u8] = b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\n\
    content-length: 32\r\nconnection: close\r\n\r\nthe berth API answers root only\n";

impl axum::serve::Listener for RootPeers {
    type Io = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            match stream.peer_cred() {
                Ok(c) if c.uid() == self.uid => return (stream, addr),
                Ok(c) => {
                    tracing::warn!(
                        uid = c.uid(),
                        pid = c.pid().unwrap_or(0),
                        "refused an API connection: its peer is not root"
                    );
                    // Never waits: a fresh socket's buffer takes the reply, or it is lost.
                    let _ = stream.try_write(NOT_ROOT_REPLY);
                }
                Err(e) => tracing::warn!("refused an API connection whose peer is unknown: {e}"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Serves only `/metrics` on a TCP address (`metrics_listen`), for Prometheus.
pub async fn serve_metrics(addr: std::net::SocketAddr, metrics: Arc<Metrics>) {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    m.encode(),
                )
            }),
        )
        .with_state(metrics);
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            if let Err(e) = axum::serve(l, app).await {
                tracing::warn!("metrics server on {addr}: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot listen on {addr} for metrics: {e}"),
    }
}

/// The published list itself (shared, not copied), written as it is serialised.
async fn list(State(s): State<ApiState>) -> Response {
    let all = s.statuses.borrow().clone();
    stream::json_shared(all)
}

async fn one(State(s): State<ApiState>, UrlPath(name): UrlPath<String>) -> Response {
    let all = s.statuses.borrow().clone();
    let found: Vec<ContainerStatus> = all.iter().filter(|c| c.name == name).cloned().collect();
    if found.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            format!("no container named {name:?}"),
        )
            .into_response();
    }
    axum::Json(found).into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    follow: bool,
}

async fn events(State(s): State<ApiState>, Query(q): Query<EventsQuery>) -> Response {
    let (past, rx) = s.events.subscribe();
    if !q.follow {
        return stream::ndjson(past);
    }
    let first = stream::chunks(move |w| stream::ndjson_lines(w, past));
    let live = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let mut line = serde_json::to_vec(&ev).expect("event serialises");
                    line.push(b'\n');
                    return Some((Ok(axum::body::Bytes::from(line)), rx));
                }
                // A slow reader missed some: go on with the newest.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(first, live));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// Sends the loop a request made around a reply channel, and waits for the reply (at most
/// `bound`); the error is the response to give when the loop is gone or silent.
async fn ask<T>(
    s: &ApiState,
    request: impl FnOnce(oneshot::Sender<T>) -> ApiRequest,
    bound: Option<Duration>,
) -> Result<T, Response> {
    let (reply, rx) = oneshot::channel();
    if s.requests.send(request(reply)).await.is_err() {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        )
            .into_response());
    }
    let answer = match bound {
        Some(b) => tokio::time::timeout(b, rx).await.ok(),
        None => Some(rx.await),
    };
    match answer {
        Some(Ok(v)) => Ok(v),
        _ => Err((StatusCode::SERVICE_UNAVAILABLE, "the agent did not answer").into_response()),
    }
}

async fn plan(State(s): State<ApiState>) -> Response {
    match ask(&s, |reply| ApiRequest::Plan { reply }, None).await {
        Ok(p) => stream::json(p),
        Err(r) => r,
    }
}

async fn apply(
    State(s): State<ApiState>,
    axum::Json(options): axum::Json<ApplyOptions>,
) -> Response {
    // The loop answers by the deadline itself; this bound only guards against a lost reply.
    let limit = options.timeout_ms.map(Duration::from_millis);
    let guard = limit.unwrap_or(Duration::from_secs(3600)) + Duration::from_secs(30);
    match ask(
        &s,
        |reply| ApiRequest::Apply { options, reply },
        Some(guard),
    )
    .await
    {
        Ok(r) => stream::json(r),
        Err(r) => r,
    }
}

async fn prune(State(s): State<ApiState>, axum::Json(prune): axum::Json<Prune>) -> Response {
    let request = |reply| ApiRequest::Prune { prune, reply };
    match ask(&s, request, None).await {
        Ok(Ok(r)) => axum::Json(r).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        Err(r) => r,
    }
}

async fn image_op(State(s): State<ApiState>, axum::Json(op): axum::Json<ImageOp>) -> Response {
    match ask(&s, |reply| ApiRequest::Image { op, reply }, None).await {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => (StatusCode::UNPROCESSABLE_ENTITY, e).into_response(),
        Err(r) => r,
    }
}

fn no_source() -> Response {
    (StatusCode::NOT_FOUND, "the agent config has no [source]").into_response()
}

async fn source_status(State(s): State<ApiState>) -> Response {
    match &s.source {
        Some(g) => axum::Json(g.status.borrow().as_ref().clone()).into_response(),
        None => no_source(),
    }
}

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct ImportRequest {
    /// An absolute path the agent can read.
    pub bundle: std::path::PathBuf,
}

async fn source_import(
    State(s): State<ApiState>,
    axum::Json(req): axum::Json<ImportRequest>,
) -> Response {
    let Some(g) = &s.source else {
        return no_source();
    };
    if !req.bundle.is_absolute() {
        return (StatusCode::BAD_REQUEST, "the bundle path must be absolute").into_response();
    }
    match g.import(req.bundle).await {
        Some(r) => axum::Json(r).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "the source is not running").into_response(),
    }
}

async fn metrics(State(s): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::client::Client;
    use crate::status::{EventRecord, Status};

    fn status(name: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            desired: "running".into(),
            status: Status::Running,
            reason: None,
            pid: Some(42),
            exit_code: None,
            image: "x".into(),
            digest: None,
            ip: None,
            ip6: None,
            network_of: None,
            ports: vec![],
            restarts: 0,
            health: None,
            error: None,
            oom_killed: false,
            since: None,
            id: None,
            previous_digest: None,
            rejected_digests: vec![],
        }
    }

    fn pulled(reference: &str) -> ImageReply {
        ImageReply::Pulled(Box::new(crate::operations::Pulled {
            reference: reference.into(),
            image: crate::image::ResolvedImage {
                reference_digest: berth_spec::Digest::of(b"index"),
                manifest_digest: berth_spec::Digest::of(b"manifest"),
                config: crate::image::ImageConfig::default(),
                layers: vec!["/layers/a".into()],
            },
            record: None,
        }))
    }

    async fn next_line(lines: &mut mpsc::UnboundedReceiver<String>) -> String {
        tokio::time::timeout(Duration::from_secs(5), lines.recv())
            .await
            .unwrap()
            .unwrap()
    }

    /// The real server on a real socket, spoken to by the real client.
    #[tokio::test]
    async fn serves_statuses_events_plan_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("berth.sock");
        let (status_tx, statuses) = watch::channel(Arc::new(vec![status("web"), status("db")]));
        let events = Arc::new(EventLog::default());
        let metrics = Arc::new(Metrics::new());
        let (requests, mut req_rx) = mpsc::channel(4);
        let state = ApiState {
            statuses,
            events: events.clone(),
            metrics,
            requests,
            source: None,
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn({
            let sock = sock.clone();
            async move {
                serve(&sock, state, async move {
                    let _ = stop_rx.await;
                })
                .await
            }
        });
        // The loop's side: answer plans, image commands (a pull, and a refused pin) and
        // prunes (echoing the flags).
        tokio::spawn(async move {
            while let Some(r) = req_rx.recv().await {
                match r {
                    ApiRequest::Plan { reply } => {
                        let _ = reply.send(PlanView {
                            actions: vec![],
                            waiting: vec![],
                            in_progress: vec![],
                        });
                    }
                    ApiRequest::Image {
                        op: ImageOp::Pull { reference },
                        reply,
                    } => {
                        let _ = reply.send(Ok(pulled(&reference)));
                    }
                    ApiRequest::Image { op, reply } => {
                        let _ = reply.send(Err(format!("cannot {op:?}")));
                    }
                    ApiRequest::Prune { prune, reply } => {
                        let _ = reply.send(Ok(PruneReport {
                            dry_run: prune.mode == crate::operations::PruneMode::DryRun,
                            volumes: match prune.volumes {
                                crate::operations::Volumes::RemoveUnmounted => vec!["v".into()],
                                crate::operations::Volumes::Keep => vec![],
                            },
                            ..PruneReport::default()
                        }));
                    }
                    ApiRequest::Apply { .. } => {}
                }
            }
        });
        let client = Client::new(&sock);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !client.is_up().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not come up"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let all: Vec<ContainerStatus> = client.get_json("/v1/containers").await.unwrap();
        assert_eq!(all.len(), 2);
        let one: Vec<ContainerStatus> = client.get_json("/v1/containers/db").await.unwrap();
        assert_eq!(one[0].name, "db");
        assert!(
            client
                .get_json::<Vec<ContainerStatus>>("/v1/containers/nope")
                .await
                .is_err()
        );
        status_tx.send(Arc::new(vec![])).unwrap();
        let all: Vec<ContainerStatus> = client.get_json("/v1/containers").await.unwrap();
        assert!(all.is_empty());

        let p: PlanView = client.get_json("/v1/plan").await.unwrap();
        assert!(p.actions.is_empty());
        assert!(
            client
                .get_text("/metrics")
                .await
                .unwrap()
                .contains("berth_reconcile_passes_total")
        );

        // Image commands and prunes: typed both ways, errors as the agent said them.
        let op = ImageOp::Pull {
            reference: "registry.example/app:1".into(),
        };
        let reply: ImageReply = client.post_json("/v1/images", &op).await.unwrap();
        assert_eq!(reply, pulled("registry.example/app:1"));
        let pin = ImageOp::Pin { image: "x".into() };
        let e = client
            .post_json::<ImageReply>("/v1/images", &pin)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cannot Pin"), "{e}");
        let prune = crate::operations::Prune {
            volumes: crate::operations::Volumes::RemoveUnmounted,
            mode: crate::operations::PruneMode::DryRun,
        };
        let report: PruneReport = client.post_json("/v1/prune", &prune).await.unwrap();
        assert!(report.dry_run);
        assert_eq!(report.volumes, ["v"]);

        events.emit(Some("web"), "started", "one");
        let (line_tx, mut lines) = mpsc::unbounded_channel::<String>();
        let follower = {
            let client = Client::new(&sock);
            tokio::spawn(async move {
                client
                    .stream_lines("/v1/events?follow=true", |l| {
                        let ev: EventRecord = serde_json::from_str(l).unwrap();
                        let last = ev.message == "two";
                        line_tx.send(ev.message).unwrap();
                        !last
                    })
                    .await
            })
        };
        // History first; then a live event emitted only after the follower is reading.
        assert_eq!(next_line(&mut lines).await, "one");
        events.emit(None, "pass", "two");
        assert_eq!(next_line(&mut lines).await, "two");
        follower.await.unwrap().unwrap();

        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
