//! Traces of berth's own operations, sent to an OTLP endpoint (OTLP/HTTP, protobuf) when
//! one is configured: each deploy, rollback or change is a span named after it, with a
//! child span per step (build, release command, start, health, switch, drain), every span
//! labelled with the app and the release it made.
//!
//! Spans are made with the OpenTelemetry SDK and batched by it; the exporter encodes them
//! with the OTLP protobuf definitions (`opentelemetry-proto`) and posts them with the
//! platform's HTTP client on the platform's runtime.

use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use std::time::{Duration, SystemTime};

/// Errors of the trace exporter's settings.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("the OTLP endpoint {0:?} must be an http:// or https:// URL")]
    BadEndpoint(String),
    #[error("traces need the platform's async runtime")]
    NoRuntime,
}

/// Where the spans go: `<endpoint>/v1/traces`, as `OTEL_EXPORTER_OTLP_ENDPOINT` means it.
pub fn traces_url(endpoint: &str) -> Result<String, TraceError> {
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(TraceError::BadEndpoint(endpoint.to_string()));
    }
    Ok(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
}

/// Posts batches of finished spans.
#[derive(Debug)]
struct OtlpHttpExporter {
    url: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    resource: ResourceAttributesWithSchema,
}

impl SpanExporter for OtlpHttpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        };
        let body = prost::Message::encode_to_vec(&request);
        let (client, url) = (self.client.clone(), self.url.clone());
        // The SDK runs exports on its own thread: the request runs on the platform's runtime.
        let sent = self
            .runtime
            .spawn(async move {
                client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))
                    .and_then(|r| match r.status() {
                        s if s.is_success() => Ok(()),
                        s => Err(format!("{url} answered {s}")),
                    })
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        sent.map_err(OTelSdkError::InternalFailure)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}

/// berth's tracer: one per platform, flushed at shutdown.
#[derive(Debug, Clone)]
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Traces {
    /// Starts exporting to `endpoint` (the base URL; spans go to `/v1/traces`). Must be
    /// called on the platform's runtime.
    pub fn start(endpoint: &str) -> Result<Self, TraceError> {
        let url = traces_url(endpoint)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TraceError::NoRuntime)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let exporter = OtlpHttpExporter {
            url,
            client,
            runtime,
            resource: ResourceAttributesWithSchema::default(),
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder_empty()
                    .with_attributes([
                        KeyValue::new("service.name", "berth"),
                        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                    ])
                    .build(),
            )
            .build();
        let tracer = provider.tracer("berth");
        Ok(Self { provider, tracer })
    }

    /// The trace of one operation on an app (`deploy`, `rollback`, `env`, …).
    pub fn operation(&self, name: &str, app: &str) -> Operation {
        let root = self
            .tracer
            .span_builder(name.to_string())
            .with_attributes([KeyValue::new("berth.app", app.to_string())])
            .start(&self.tracer);
        Operation {
            tracer: self.tracer.clone(),
            app: app.to_string(),
            root: Context::new().with_span(root),
            steps: Vec::new(),
        }
    }

    /// Sends what is waiting and stops.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// One operation being traced. Steps are spans kept open until the operation ends, so
/// that each carries the release the operation made.
#[derive(Debug)]
pub struct Operation {
    tracer: SdkTracer,
    app: String,
    root: Context,
    /// Each step's span and when it ended (the start of the next).
    steps: Vec<(opentelemetry_sdk::trace::Span, Option<SystemTime>)>,
}

impl Operation {
    /// The operation moved to step `name`.
    pub fn step(&mut self, name: &str) {
        let now = SystemTime::now();
        if let Some((_, end)) = self.steps.last_mut() {
            end.get_or_insert(now);
        }
        let span = self
            .tracer
            .span_builder(name.to_string())
            .with_start_time(now)
            .with_attributes([KeyValue::new("berth.app", self.app.clone())])
            .start_with_context(&self.tracer, &self.root);
        self.steps.push((span, None));
    }

    /// The operation ended: with the release it made, or with an error.
    pub fn finish(mut self, release: Option<u32>, error: Option<&str>) {
        let now = SystemTime::now();
        let last = self.steps.len().saturating_sub(1);
        for (i, (mut span, end)) in self.steps.drain(..).enumerate() {
            if let Some(v) = release {
                span.set_attribute(KeyValue::new("berth.release", i64::from(v)));
            }
            if i == last {
                if let Some(e) = error {
                    span.set_status(Status::error(e.to_string()));
                }
            }
            span.end_with_timestamp(end.unwrap_or(now));
        }
        let root = self.root.span();
        if let Some(v) = release {
            root.set_attribute(KeyValue::new("berth.release", i64::from(v)));
        }
        match error {
            Some(e) => root.set_status(Status::error(e.to_string())),
            None => root.set_status(Status::Ok),
        }
        root.end_with_timestamp(now);
    }
}
