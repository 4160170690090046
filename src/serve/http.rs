//! The HTTP side of `fer serve`: the routes, the limits every request meets
//! (body size, read timeouts, a bounded number of frames in the works), the
//! WebSocket stream with its close codes, and the accept loop, which is our
//! own because `axum::serve` gives hyper no timer and so no read timeout.
//! `/api/predict` takes a raw image or a `multipart/form-data` upload (see
//! `form`); both are read here under the same limits.

use super::fault::{self, Fault};
use super::form;
use super::guard::Failure;
use super::metrics::Gauges;
use super::{lock, Engine, Rejected, ServeOptions, Stream, PAGE};
use anyhow::{Context, Result};
use axum::body::{Body, HttpBody};
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};

/// Everything a handler needs.
#[derive(Clone)]
struct App {
    engine: Arc<Engine>,
    /// One permit per frame being decoded and classified.
    work: Arc<Semaphore>,
    /// One permit per `BODY_UNIT` bytes of request bodies held in memory.
    bodies: Arc<Semaphore>,
    limits: Limits,
}

/// The grain of `App::bodies`.
const BODY_UNIT: usize = 64 << 10;

#[derive(Clone, Copy)]
struct Limits {
    max_body: usize,
    max_concurrent: usize,
    queue_timeout: Duration,
    read_timeout: Duration,
    ws_idle_timeout: Duration,
}

impl App {
    /// Waits for a turn to decode and classify, at most the queue timeout.
    /// The permit travels with the blocking work, so it is held until that
    /// work ends even if the client has gone.
    async fn turn(&self) -> Option<OwnedSemaphorePermit> {
        let permit = timeout(self.limits.queue_timeout, self.work.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        let now = self.limits.max_concurrent - self.work.available_permits();
        self.engine.metrics.in_progress(now);
        Some(permit)
    }

    /// One frame through the engine on a blocking thread, in turn: a
    /// stream's frame (the stream handed back), or a still image.
    async fn run_frame(
        &self,
        bytes: Vec<u8>,
        mut stream: Option<Stream>,
        fault: Fault,
    ) -> (Result<super::FrameResult, Failure>, Option<Stream>) {
        let Some(permit) = self.turn().await else {
            self.engine.metrics.error("busy");
            let why = format!(
                "server busy: no turn within {} s (--queue-timeout); retry",
                self.limits.queue_timeout.as_secs()
            );
            return (Err(Failure::Busy(why)), stream);
        };
        let e = self.engine.clone();
        let work = tokio::task::spawn_blocking(move || {
            let _turn = permit;
            let r = e.handle(&bytes, stream.as_mut(), fault);
            (r, stream)
        });
        match work.await {
            Ok(done) => done,
            // `handle` contains panics; this is the runtime shutting down.
            Err(err) => {
                self.engine.metrics.error("panic");
                (Err(Failure::Panicked(err.to_string())), None)
            }
        }
    }
}

fn error_json(status: StatusCode, msg: String) -> Response {
    (status, Json(serde_json::json!({"error": msg}))).into_response()
}

/// An answer after which the connection closes: the request's body was not
/// (all) read, so the connection cannot carry another request.
fn closing(status: StatusCode, msg: String) -> Response {
    let mut r = error_json(status, msg);
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

/// The HTTP answer to a frame that got no result.
fn failure_response(f: Failure) -> Response {
    match f {
        Failure::Rejected(r) => {
            let status = match r {
                Rejected::BadPayload(_) => StatusCode::BAD_REQUEST,
                Rejected::TooManyPixels(_) => StatusCode::PAYLOAD_TOO_LARGE,
            };
            error_json(status, r.to_string())
        }
        Failure::Busy(why) => {
            let mut resp = error_json(StatusCode::SERVICE_UNAVAILABLE, why);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            resp
        }
        Failure::Panicked(m) => error_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error while processing this image ({m}); the server goes on"),
        ),
        Failure::Broken(why) => error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the model is broken ({why}); restart fer serve"),
        ),
    }
}

/// Why an upload could not be read whole.
enum BodyError {
    TooLarge,
    /// Nothing more arrived before the read deadline.
    Stalled {
        got: usize,
    },
    /// The client closed the connection (or garbled the body) before its end.
    Aborted {
        got: usize,
        why: String,
    },
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The whole body, at most `limit` bytes, all arrived by `deadline`.
async fn read_body(
    mut body: Body,
    limit: usize,
    declared: Option<usize>,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    loop {
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx));
        match timeout_at(deadline, next).await {
            Err(_) => return Err(BodyError::Stalled { got: buf.len() }),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                // The innermost cause says what happened ("end of file
                // before message length reached").
                let mut cause: &dyn std::error::Error = &e;
                while let Some(s) = cause.source() {
                    cause = s;
                }
                let why = cause.to_string();
                return Err(BodyError::Aborted {
                    got: buf.len(),
                    why,
                });
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > limit {
                        return Err(BodyError::TooLarge);
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    match declared {
        Some(n) if buf.len() < n => Err(BodyError::Aborted {
            got: buf.len(),
            why: "the body ended early".into(),
        }),
        _ => Ok(buf),
    }
}

async fn predict(State(app): State<App>, req: axum::extract::Request) -> Response {
    let e = &app.engine;
    e.metrics.request("predict");
    let max = app.limits.max_body;
    let too_large = || {
        e.metrics.error("too_large");
        closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over the {max} byte limit (--max-body)"),
        )
    };
    // Refuse a declared oversize upload before reading any of it, so the
    // client gets its 413 instead of a connection reset mid-upload.
    let declared = content_length(req.headers());
    if declared.is_some_and(|n| n > max) {
        return too_large();
    }
    let fault = Fault::from_header(
        req.headers()
            .get(fault::HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    // Room for the body among all bodies held at once, before reading it:
    // a burst of large uploads waits (then gets 503) instead of growing
    // the process. The permit is held until the answer.
    let units = declared.unwrap_or(max).min(max).div_ceil(BODY_UNIT).max(1) as u32;
    let _room = match timeout(
        app.limits.queue_timeout,
        app.bodies.clone().acquire_many_owned(units),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => {
            e.metrics.error("busy");
            return closing(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "server busy: no room for the upload within {} s (--max-buffered bytes of uploads are held at once); retry",
                    app.limits.queue_timeout.as_secs()
                ),
            );
        }
    };
    let (parts, body) = req.into_parts();
    // A form is read whole like a raw body, so --max-body counts all of it
    // and the read timeout and cut-short answers are the same.
    let is_form = form::is_form(&parts.headers);
    let wait = app.limits.read_timeout;
    let body = match read_body(body, max, declared, Instant::now() + wait).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::Stalled { got }) => {
            e.metrics.error("body_timeout");
            return closing(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the upload stalled: {got}{} bytes arrived within {} s (--read-timeout)",
                    declared.map_or(String::new(), |n| format!(" of {n}")),
                    wait.as_secs()
                ),
            );
        }
        Err(BodyError::Aborted { got, why }) => {
            e.metrics.error("aborted");
            return closing(
                StatusCode::BAD_REQUEST,
                format!(
                    "upload cut short: {got}{} bytes arrived before the client stopped ({why})",
                    declared.map_or(String::new(), |n| format!(" of {n}"))
                ),
            );
        }
    };
    let image = match is_form {
        false => body,
        true => match form::image_part(parts, body).await {
            Ok(image) => image,
            Err(why) => {
                e.metrics.error("bad_multipart");
                return error_json(StatusCode::BAD_REQUEST, why);
            }
        },
    };
    match app.run_frame(image, None, fault).await.0 {
        Ok(r) => Json(r).into_response(),
        Err(f) => failure_response(f),
    }
}

async fn ws(State(app): State<App>, up: WebSocketUpgrade) -> Response {
    app.engine.metrics.request("ws");
    let max = app.limits.max_body;
    // A frame is refused on its header, before its payload is buffered.
    up.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |s| stream(s, app))
}

/// A WebSocket read error as a close code, a counter and a reason; `None`
/// when the client simply went away.
fn ws_error(e: axum::Error, max: usize) -> Option<(u16, &'static str, String)> {
    use tungstenite::error::{Error as WsError, ProtocolError};
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => Some((
            close_code::SIZE,
            "ws_too_large",
            format!("message over the {max} byte limit (--max-body)"),
        )),
        Some(WsError::Utf8(_)) => Some((
            close_code::INVALID,
            "ws_protocol",
            "text message is not UTF-8".into(),
        )),
        Some(
            WsError::Io(_)
            | WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
        ) => None,
        Some(WsError::Protocol(p)) => Some((close_code::PROTOCOL, "ws_protocol", p.to_string())),
        // tungstenite's error under another version: still a bad stream.
        _ => Some((close_code::PROTOCOL, "ws_protocol", inner.to_string())),
    }
}

/// Sends a close frame (bounded in time: the client may not be reading).
async fn close(socket: &mut WebSocket, app: &App, code: u16, counter: &str, reason: String) {
    app.engine.metrics.error(counter);
    // A close reason is at most 123 bytes.
    let mut reason = reason;
    while reason.len() > 123 {
        reason.pop();
    }
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = timeout(
        app.limits.read_timeout,
        socket.send(Message::Close(Some(frame))),
    )
    .await;
}

/// One WebSocket: binary images in, one JSON answer each, in order.
async fn stream(mut socket: WebSocket, app: App) {
    let e = app.engine.clone();
    let mut state = Some(e.stream());
    let mut frame = 0u64;
    loop {
        let msg = match timeout(app.limits.ws_idle_timeout, socket.recv()).await {
            Err(_) => {
                let idle = app.limits.ws_idle_timeout.as_secs();
                let why = format!("no message for {idle} s (--ws-idle-timeout)");
                return close(&mut socket, &app, close_code::POLICY, "ws_timeout", why).await;
            }
            Ok(None) => return,
            Ok(Some(Err(err))) => {
                if let Some((code, counter, why)) = ws_error(err, app.limits.max_body) {
                    close(&mut socket, &app, code, counter, why).await;
                }
                return;
            }
            Ok(Some(Ok(m))) => m,
        };
        let bytes = match msg {
            Message::Binary(b) => b.to_vec(),
            Message::Close(_) => return,
            Message::Text(_) => {
                let why = "send frames as binary JPEG or PNG messages".to_string();
                return close(
                    &mut socket,
                    &app,
                    close_code::UNSUPPORTED,
                    "ws_unsupported",
                    why,
                )
                .await;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        frame += 1;
        let (res, s) = app.run_frame(bytes, state.take(), Fault::None).await;
        state = Some(s.unwrap_or_else(|| e.stream()));
        let reply = match res {
            Ok(r) => {
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                v["frame"] = frame.into();
                if frame % 10 == 1 {
                    v["drift"] = serde_json::to_value(lock(&e.drift).summary()).unwrap_or_default();
                }
                v.to_string()
            }
            Err(f) => {
                let msg = match f {
                    Failure::Rejected(r) => r.to_string(),
                    Failure::Busy(why) => why,
                    Failure::Panicked(m) => format!("internal error ({m})"),
                    Failure::Broken(why) => format!("the model is broken ({why})"),
                };
                serde_json::json!({"frame": frame, "error": msg}).to_string()
            }
        };
        let sent = timeout(
            app.limits.read_timeout,
            socket.send(Message::Text(reply.into())),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
    }
}

async fn health(State(app): State<App>) -> Response {
    let e = &app.engine;
    e.metrics.request("healthz");
    match e.broken() {
        None => Json(serde_json::json!({"status": "ok", "model": e.model_name})).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "broken", "model": e.model_name, "reason": why})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(app): State<App>) -> Response {
    let e = &app.engine;
    e.metrics.request("metrics");
    let drift = lock(&e.drift).summary();
    let gauges = Gauges {
        in_progress: app.limits.max_concurrent - app.work.available_permits(),
        limit: app.limits.max_concurrent,
        model_broken: e.broken().is_some(),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        e.metrics.render(&e.classes, &drift, &gauges),
    )
        .into_response()
}

async fn drift_json(State(app): State<App>) -> Response {
    Json(lock(&app.engine.drift).summary()).into_response()
}

fn router(app: App) -> Router {
    // The multipart parser applies axum's default body limit (2 MB) to the
    // bytes it is handed; they are already within --max-body.
    let predict = post(predict).layer(DefaultBodyLimit::max(app.limits.max_body));
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics_text))
        .route("/api/drift", get(drift_json))
        .route("/ws", get(ws))
        .route("/api/predict", predict)
        .with_state(app)
}

/// Serves until Ctrl-C; `on_ready` is told the bound address and the model
/// once the socket listens.
pub fn run(a: ServeOptions, on_ready: impl FnOnce(std::net::SocketAddr, &str)) -> Result<()> {
    crate::runtime::serving_allocator();
    let engine = Arc::new(Engine::new(&a)?);
    let limits = Limits {
        max_body: a.max_body,
        max_concurrent: a.max_concurrent.max(1),
        queue_timeout: a.queue_timeout,
        read_timeout: a.read_timeout,
        ws_idle_timeout: a.ws_idle_timeout,
    };
    let app = App {
        engine: engine.clone(),
        work: Arc::new(Semaphore::new(limits.max_concurrent)),
        // At least one body of the largest size fits.
        bodies: Arc::new(Semaphore::new(
            a.max_buffered
                .max(a.max_body)
                .div_ceil(BODY_UNIT)
                .min(Semaphore::MAX_PERMITS),
        )),
        limits,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.addr)
            .await
            .with_context(|| format!("binding {}", a.addr))?;
        let addr = listener.local_addr()?;
        on_ready(addr, &engine.model_name);
        accept_loop(listener, router(app), engine, a.read_timeout).await;
        Ok(())
    })
}

/// Accepts connections until Ctrl-C, each served by hyper with a header read
/// timeout (a client that sends no complete request head within it, an idle
/// keep-alive one included, is disconnected); then lets open requests finish
/// for up to 5 s.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    engine: Arc<Engine>,
    read_timeout: Duration,
) {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                // Out of file descriptors and the like: wait, do not spin.
                Err(err) => {
                    eprintln!("fer serve: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut ctrl_c => break,
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        let engine = engine.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(read_timeout)
                // A client that shuts its write side mid-upload still reads
                // the answer that says so.
                .half_close(true)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let mut stopping = false;
            let result = loop {
                tokio::select! {
                    r = conn.as_mut() => break r,
                    _ = stop.changed(), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            };
            if result.is_err_and(|err| err.is_timeout()) {
                engine.metrics.error("header_timeout");
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    let _ = timeout(Duration::from_secs(5), stop_tx.closed()).await;
}
