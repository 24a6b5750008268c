//! An OTLP/HTTP trace receiver: takes `POST /v1/traces` (protobuf), decodes each request
//! with the OpenTelemetry proto types and keeps the spans. Also one that accepts
//! connections and never answers (a collector that hangs).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct OtlpReceiver {
    /// The URL to export to.
    pub endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, kept.clone()));
            }
        });
        Self {
            endpoint: format!("http://127.0.0.1:{port}/v1/traces"),
            spans,
        }
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("spans").clone()
    }

    /// Waits (up to 15 s) until `ready` holds for the spans received.
    pub async fn wait_for(&self, ready: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans = self.spans();
            if ready(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver did not get the spans; it has: {:#?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// HTTP/1.1 requests on one connection, each answered 200 with an empty export response.
async fn serve(mut stream: TcpStream, spans: Arc<Mutex<Vec<Span>>>) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buffer.drain(..head_end + length).skip(head_end).collect();
        assert!(
            head.contains("content-type: application/x-protobuf"),
            "OTLP/HTTP protobuf expected: {head}"
        );
        let request =
            ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP trace request");
        {
            let mut received = spans.lock().expect("spans");
            for resource in request.resource_spans {
                for scope in resource.scope_spans {
                    received.extend(scope.spans);
                }
            }
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A collector that takes connections and never answers; returns its URL.
pub async fn hanging_receiver() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    format!("http://127.0.0.1:{port}/v1/traces")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An attribute's value as text (what the secret check reads).
pub fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

pub fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| value_text(kv.value.as_ref()))
}

/// Every span as text: name, ids, each attribute and each event with its attributes. This
/// is what the whole-run secret check reads (`otlp-spans*.txt`).
pub fn spans_as_text(spans: &[Span]) -> String {
    let mut text = String::new();
    for span in spans {
        text.push_str(&format!(
            "span {} trace={} id={} parent={}\n",
            span.name,
            hex(&span.trace_id),
            hex(&span.span_id),
            hex(&span.parent_span_id)
        ));
        for kv in &span.attributes {
            text.push_str(&format!(
                "  {} = {}\n",
                kv.key,
                value_text(kv.value.as_ref())
            ));
        }
        for event in &span.events {
            text.push_str(&format!("  event {}\n", event.name));
            for kv in &event.attributes {
                text.push_str(&format!(
                    "    {} = {}\n",
                    kv.key,
                    value_text(kv.value.as_ref())
                ));
            }
        }
    }
    text
}
