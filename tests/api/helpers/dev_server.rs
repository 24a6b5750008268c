//! A stand-in for a frontend dev server (Vite and the like), for the pass-through tests.
//!
//! - a WebSocket upgrade (any path): a real WebSocket that echoes text as `echo: <text>` and
//!   binary as is, and agrees to the first subprotocol offered (Vite asks for `vite-hmr`)
//! - `/missing`: 404 with a plain-text body
//! - anything else: 200 JSON `{dev_server, method, path, headers: [[name, value]…], body}`
//!
//! It keeps the head of every request it saw, WebSocket handshakes included.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone)]
pub struct DevServer {
    pub origin: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl DevServer {
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("seen").clone()
    }
}

pub async fn spawn_dev_server() -> DevServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(connection(stream, log.clone()));
        }
    });
    DevServer { origin, seen }
}

async fn connection(stream: TcpStream, seen: Arc<Mutex<Vec<SeenRequest>>>) {
    // Peek at the head: a WebSocket handshake goes to tungstenite untouched.
    let mut peeked = vec![0u8; 16 * 1024];
    let head = loop {
        let Ok(n) = stream.peek(&mut peeked).await else {
            return;
        };
        if n == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&peeked[..n]).into_owned();
        if text.contains("\r\n\r\n") {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    if head.to_ascii_lowercase().contains("upgrade: websocket") {
        websocket(stream, seen).await;
    } else {
        http(stream, seen).await;
    }
}

async fn websocket(stream: TcpStream, seen: Arc<Mutex<Vec<SeenRequest>>>) {
    #[allow(clippy::result_large_err)] // the error type is tungstenite's, not ours
    let callback = move |request: &Request, mut response: Response| {
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        seen.lock().expect("seen").push(SeenRequest {
            method: request.method().as_str().to_owned(),
            path: request.uri().to_string(),
            headers,
        });
        if let Some(protocol) = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
        {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                protocol.trim().parse().expect("protocol"),
            );
        }
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(Ok(message)) = socket.next().await {
        let reply = match message {
            Message::Text(text) => Message::Text(format!("echo: {text}")),
            Message::Binary(bytes) => Message::Binary(bytes),
            Message::Close(_) => break,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

async fn http(mut stream: TcpStream, seen: Arc<Mutex<Vec<SeenRequest>>>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_owned();
    let path = request_line.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    seen.lock().expect("seen").push(SeenRequest {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
    });
    let (status, content_type, payload) = if path == "/missing" {
        ("404 Not Found", "text/plain", "no such module".to_owned())
    } else {
        (
            "200 OK",
            "application/json",
            json!({
                "dev_server": true,
                "method": method,
                "path": path,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            })
            .to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-dev-server: yes\r\nset-cookie: dev=1; Path=/\r\nconnection: close\r\n\r\n{payload}",
        payload.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
