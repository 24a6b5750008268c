//! Trace export over OTLP/HTTP (protobuf): the spans the logs already use (a
//! `tracing-opentelemetry` layer), queued and sent in batches by a thread of their own.
//!
//! A request never waits for export: a finished span goes into a bounded queue with a
//! non-blocking `try_send`, and when the queue is full it is dropped and counted
//! (`gatehouse_trace_spans_dropped_total`). The SDK's own batch processor drops as well but
//! counts only into its log at shutdown, so the queue here is ours; the encoding and the
//! HTTP exchange are `opentelemetry-otlp`'s, sent through the project's reqwest 0.12 client
//! (the crate's own client is reqwest 0.13, a second HTTP stack).

use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::config::TelemetrySettings;
use crate::edge::trace_context::TraceContext;

/// The most spans in one export request.
const MAX_BATCH: usize = 512;
/// How long a finished span may wait for a batch to fill before it is sent anyway.
const SCHEDULE_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum TraceExportError {
    #[error("telemetry.otlp_endpoint: cannot build the OTLP exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("cannot start the trace export thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The running export: the tracer provider (flushed at shutdown) and the count of spans
/// dropped because the queue was full.
pub struct TraceExport {
    provider: SdkTracerProvider,
    dropped: Counter,
}

impl std::fmt::Debug for TraceExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceExport")
            .field("dropped", &self.dropped.get())
            .finish_non_exhaustive()
    }
}

impl TraceExport {
    /// Starts the export thread and returns the export with the tracer for the layer.
    pub fn start(
        settings: &TelemetrySettings,
        endpoint: &url::Url,
    ) -> Result<(Self, opentelemetry_sdk::trace::SdkTracer), TraceExportError> {
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(ExportClient::new(settings.export_timeout))
            .with_endpoint(endpoint.as_str())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(settings.export_timeout)
            .build()
            .map_err(TraceExportError::Exporter)?;
        exporter.set_resource(&resource);
        let dropped = Counter::default();
        let processor = QueueProcessor::start(
            exporter,
            settings.queue_size,
            dropped.clone(),
            // A flush waits for at most the export under way and one more.
            settings.export_timeout * 2 + Duration::from_secs(1),
        )?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("gatehouse");
        Ok((Self { provider, dropped }, tracer))
    }

    /// Spans dropped because the queue was full (the counter the metrics expose).
    pub fn dropped_spans(&self) -> Counter {
        self.dropped.clone()
    }

    /// Sends what is queued (waiting at most the export timeout) and stops the thread.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "trace export did not finish cleanly");
        }
    }
}

enum Control {
    /// Send everything queued, then answer.
    Flush(std::sync::mpsc::Sender<()>),
    /// Send everything queued, answer and stop.
    Stop(std::sync::mpsc::Sender<()>),
}

/// A span processor with a bounded queue in front of the exporter's thread.
#[derive(Debug)]
struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
    control: mpsc::UnboundedSender<Control>,
    dropped: Counter,
    /// How long flush and shutdown wait for the thread.
    patience: Duration,
}

impl QueueProcessor {
    fn start(
        exporter: opentelemetry_otlp::SpanExporter,
        queue_size: usize,
        dropped: Counter,
        patience: Duration,
    ) -> Result<Self, TraceExportError> {
        let (spans, queued) = mpsc::channel(queue_size);
        let (control, commands) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("trace-export".into())
            .spawn(move || export_loop(exporter, queued, commands))
            .map_err(TraceExportError::Thread)?;
        Ok(Self {
            spans,
            control,
            dropped,
            patience,
        })
    }

    fn ask(&self, command: fn(std::sync::mpsc::Sender<()>) -> Control) -> OTelSdkResult {
        let (done, wait) = std::sync::mpsc::channel();
        self.control
            .send(command(done))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        wait.recv_timeout(self.patience)
            .map_err(|_| OTelSdkError::Timeout(self.patience))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.ask(Control::Stop)
    }
}

/// The export thread: its own single-threaded runtime, so that a slow or absent collector
/// costs this thread's time and never a request worker's.
fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut queued: mpsc::Receiver<SpanData>,
    mut commands: mpsc::UnboundedReceiver<Control>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "trace export stopped: no runtime for its thread");
            return;
        }
    };
    runtime.block_on(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let command = tokio::select! {
                received = queued.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        None
                    } else {
                        // A little time for the rest of the request's spans to arrive.
                        let _ = tokio::time::timeout(SCHEDULE_DELAY, async {
                            while batch.len() < MAX_BATCH {
                                let room = MAX_BATCH - batch.len();
                                if queued.recv_many(&mut batch, room).await == 0 {
                                    break;
                                }
                            }
                        })
                        .await;
                        send(&exporter, &mut batch).await;
                        continue;
                    }
                }
                command = commands.recv() => command,
            };
            while let Ok(span) = queued.try_recv() {
                batch.push(span);
                if batch.len() == MAX_BATCH {
                    send(&exporter, &mut batch).await;
                }
            }
            send(&exporter, &mut batch).await;
            match command {
                Some(Control::Flush(done)) => {
                    let _ = done.send(());
                }
                Some(Control::Stop(done)) => {
                    let _ = exporter.shutdown();
                    let _ = done.send(());
                    return;
                }
                None => return,
            }
        }
    });
}

async fn send(exporter: &opentelemetry_otlp::SpanExporter, batch: &mut Vec<SpanData>) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
    let count = spans.len();
    if let Err(error) = exporter.export(spans).await {
        tracing::warn!(spans = count, %error, "trace export failed; those spans are lost");
    }
}

/// `opentelemetry-http`'s client over the project's reqwest.
#[derive(Debug)]
struct ExportClient {
    http: reqwest::Client,
}

impl ExportClient {
    fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { http }
    }
}

/// A collector's answer is a small protobuf message; anything longer is cut off here.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let mut response = self.http.execute(request).await?;
        let mut answer = http::Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = std::mem::take(response.headers_mut());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            let room = MAX_RESPONSE_BYTES.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        Ok(answer.body(Bytes::from(body))?)
    }
}

/// The ids a request's exported span has in its trace.
#[derive(Debug)]
pub struct ExportedIds {
    pub trace_id: String,
    pub span_id: String,
}

/// Makes `span` (a request's) continue the caller's trace when `trace` was continued, and
/// returns the ids the export gave it; `None` when nothing is exported (the request keeps
/// the ids `trace` made).
pub fn join(span: &tracing::Span, trace: &TraceContext) -> Option<ExportedIds> {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if trace.continued {
        let parent = (|| {
            let trace_id = TraceId::from_hex(&trace.trace_id).ok()?;
            let parent_id = SpanId::from_hex(trace.parent_id.as_deref()?).ok()?;
            let flags = u8::from_str_radix(&trace.flags, 16).ok()?;
            Some(SpanContext::new(
                trace_id,
                parent_id,
                TraceFlags::new(flags),
                true,
                TraceState::NONE,
            ))
        })();
        if let Some(parent) = parent {
            // No export layer: nothing to join, and the context below is empty.
            if span
                .set_parent(Context::new().with_remote_span_context(parent))
                .is_err()
            {
                return None;
            }
        }
    }
    let context = span.context();
    let exported = context.span().span_context().clone();
    exported.is_valid().then(|| ExportedIds {
        trace_id: exported.trace_id().to_string(),
        span_id: exported.span_id().to_string(),
    })
}

/// The id the export gave `span` (16 lower-case hex digits); `None` when nothing is
/// exported.
pub fn span_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = span.context();
    let exported = context.span().span_context().clone();
    exported.is_valid().then(|| exported.span_id().to_string())
}
