//! `[telemetry]`: traces exported over OTLP/HTTP (protobuf). Nothing is exported unless
//! `otlp_endpoint` is set.

use super::*;

#[derive(Debug, Deserialize, Default)]
pub(super) struct RawTelemetry {
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) otlp_endpoint: Option<String>,
    pub(super) queue_size: Option<i64>,
    pub(super) export_timeout_secs: Option<i64>,
    #[serde(default, deserialize_with = "string_from_scalar")]
    pub(super) service_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// Where spans are posted (OTLP/HTTP, protobuf); `None`: no export. An endpoint with an
    /// empty path gets the standard `/v1/traces`; any other path is used as it is.
    pub otlp_endpoint: Option<Url>,
    /// Finished spans waiting for export; once full, new spans are dropped (and counted),
    /// never waited for.
    pub queue_size: usize,
    /// The longest one export (one batch) may take.
    pub export_timeout: Duration,
    /// `service.name` on every span.
    pub service_name: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            queue_size: DEFAULT_QUEUE_SIZE,
            export_timeout: Duration::from_secs(DEFAULT_EXPORT_TIMEOUT_SECS),
            service_name: "gatehouse".into(),
        }
    }
}

const DEFAULT_QUEUE_SIZE: usize = 2048;
const DEFAULT_EXPORT_TIMEOUT_SECS: u64 = 10;

pub(super) fn validate_telemetry(
    raw: RawTelemetry,
    problems: &mut Vec<String>,
) -> TelemetrySettings {
    let defaults = TelemetrySettings::default();
    let otlp_endpoint = raw.otlp_endpoint.and_then(|text| match Url::parse(&text) {
        Ok(mut url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            if url.path() == "/" {
                url.set_path("/v1/traces");
            }
            Some(url)
        }
        Ok(_) => {
            problems.push(format!(
                "telemetry.otlp_endpoint `{text}` must be an http(s) URL with a host"
            ));
            None
        }
        Err(e) => {
            problems.push(format!("telemetry.otlp_endpoint `{text}`: {e}"));
            None
        }
    });
    let queue_size = match raw.queue_size {
        None => defaults.queue_size,
        Some(n) if (1..=1_000_000).contains(&n) => n as usize,
        Some(n) => {
            problems.push(format!(
                "telemetry.queue_size {n} must be between 1 and 1000000"
            ));
            defaults.queue_size
        }
    };
    let export_timeout = match raw.export_timeout_secs {
        None => defaults.export_timeout,
        Some(n) if (1..=300).contains(&n) => Duration::from_secs(n as u64),
        Some(n) => {
            problems.push(format!(
                "telemetry.export_timeout_secs {n} must be between 1 and 300"
            ));
            defaults.export_timeout
        }
    };
    let service_name = match raw.service_name {
        None => defaults.service_name,
        Some(name) if !name.trim().is_empty() => name,
        Some(_) => {
            problems.push("telemetry.service_name must not be empty".into());
            defaults.service_name
        }
    };
    TelemetrySettings {
        otlp_endpoint,
        queue_size,
        export_timeout,
        service_name,
    }
}
