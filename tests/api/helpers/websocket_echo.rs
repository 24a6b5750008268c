//! A WebSocket upstream for the API routes' tests: it echoes every text and binary message,
//! and records each handshake's path and headers and each close frame it receives. And the
//! browser's side: a socket opened through gatehouse, and the close frame it gets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TestApp;

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, Clone)]
pub struct Handshake {
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
}

impl Handshake {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Seen {
    /// Bytes `/flood` has handed to its socket so far.
    flooded: u64,
    handshakes: Vec<Handshake>,
    /// The close code of each close frame received (`None`: a close without a code).
    closes: Vec<Option<u16>>,
}

pub struct WebSocketEcho {
    pub base: String,
    seen: Arc<Mutex<Seen>>,
}

impl WebSocketEcho {
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.seen.lock().expect("lock").handshakes.clone()
    }

    pub fn closes(&self) -> Vec<Option<u16>> {
        self.seen.lock().expect("lock").closes.clone()
    }

    pub fn flooded_bytes(&self) -> u64 {
        self.seen.lock().expect("lock").flooded
    }
}

/// Listens on loopback; the path `/refuse` answers the handshake with 403, and `/flood`
/// sends 64 KiB binary messages as fast as its socket takes them, reading nothing. A text
/// message `shout N` gets N bytes back in one binary message.
pub async fn spawn_websocket_echo() -> WebSocketEcho {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let recorder = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, recorder.clone()));
        }
    });
    WebSocketEcho { base, seen }
}

async fn serve(stream: tokio::net::TcpStream, seen: Arc<Mutex<Seen>>) {
    let recorder = seen.clone();
    #[allow(clippy::result_large_err)] // the error type is tungstenite's, not ours
    let callback =
        move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            let handshake = Handshake {
                path: request.uri().to_string(),
                headers: request
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
            };
            let refuse = handshake.path.contains("/refuse");
            recorder.lock().expect("lock").handshakes.push(handshake);
            if refuse {
                let mut refusal = ErrorResponse::new(Some("refused by the upstream".to_owned()));
                *refusal.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
                return Err(refusal);
            }
            Ok(response)
        };
    let config = WebSocketConfig {
        max_message_size: Some(8 << 20),
        max_frame_size: Some(8 << 20),
        ..WebSocketConfig::default()
    };
    let Ok(mut socket) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let flood = seen
        .lock()
        .expect("lock")
        .handshakes
        .last()
        .is_some_and(|h| h.path.contains("/flood"));
    if flood {
        let message = vec![7u8; 64 * 1024];
        while socket.send(Message::Binary(message.clone())).await.is_ok() {
            seen.lock().expect("lock").flooded += message.len() as u64;
        }
        return;
    }
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Close(frame) = &message {
            let code = frame.as_ref().map(|f| u16::from(f.code));
            seen.lock().expect("lock").closes.push(code);
        }
        // `shout N` is answered with N bytes in one binary message instead of its echo.
        let answer = match &message {
            Message::Text(text) => match text.strip_prefix("shout ").map(str::parse) {
                Some(Ok(bytes)) => Some(Message::Binary(vec![b'!'; bytes])),
                _ => Some(message),
            },
            Message::Binary(_) => Some(message),
            _ => None,
        };
        if let Some(answer) = answer {
            if socket.send(answer).await.is_err() {
                return;
            }
        }
    }
}

/// A socket to `path` through gatehouse, from a page of its own origin, with the session
/// cookie when given.
pub async fn open(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://127.0.0.1:{}{path}", app.port)
        .into_client_request()
        .expect("request");
    let headers = request.headers_mut();
    headers.insert("origin", app.base.parse().expect("origin"));
    // Offered, and never passed on: the relay parses frames.
    headers.insert(
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits"
            .parse()
            .expect("value"),
    );
    if let Some(cookie) = cookie {
        let value = format!("{}={cookie}", app.cookie_name());
        headers.insert("cookie", value.parse().expect("cookie"));
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// Waits for the close frame gatehouse sends, and says when it came.
pub async fn close_code(socket: &mut Socket, within: Duration) -> (Option<CloseCode>, Duration) {
    let started = Instant::now();
    loop {
        match tokio::time::timeout(within, socket.next()).await {
            Err(_) => panic!("no close within {within:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (frame.map(|f| f.code), started.elapsed())
            }
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("the socket ended without a close frame: {other:?}"),
        }
    }
}
