//! `--collector`: OTLP/HTTP protobuf ingest into the demo's collector, as a modules process
//! started with `--otlp` feeds it: keep-alive HTTP/1.1 connections posting 512 spans a
//! request (the exporter's batch), each span one of the three of a split request (the gate's
//! SERVER root and CLIENT call, Chat's SERVER span) with the attributes mqrs gives them, every
//! request new traces. Per round: spans accepted per second and the demo's CPU time per span
//! with the gate idle, then the same while the gate serves untraced requests (and the gate's
//! requests per second against a phase of gate load alone).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use demo::harness::{cpu_seconds, median, DemoProcess};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::door::{Door, Kind};
use crate::phase::{phase, Mode};
use crate::Cli;

/// Spans per request: the batch mqrs's exporter sends.
const BATCH: usize = 512;
/// Connections posting at once.
const POSTERS: usize = 3;
/// High 8 bytes of every trace id in the template, replaced per request.
const MARKER: [u8; 8] = *b"mqrsOTLP";
/// The bar for ingest with the gate idle, spans/s.
const TARGET: f64 = 200_000.0;

fn attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// One request's body, with the offsets of its trace ids' marker.
struct Template {
    body: Vec<u8>,
    marks: Vec<usize>,
}

impl Template {
    fn new() -> Result<Template, String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_nanos() as u64;
        let mut gate = Vec::new();
        let mut chat = Vec::new();
        for n in 0..BATCH as u64 {
            let (request, step) = (n / 3, n % 3);
            let mut trace_id = MARKER.to_vec();
            trace_id.extend_from_slice(&(request + 1).to_be_bytes());
            let id = |k: u64| ((request << 2) | (k + 1)).to_be_bytes().to_vec();
            let user = format!("user{}", request % 50);
            let session = format!("s-{}", request % 50);
            let mut attributes = vec![
                attr("rpc.system.name", "mqrs"),
                attr("rpc.method", "Chat/HD_CurrentRoom"),
                attr("user.id", &user),
                attr("session.id", &session),
            ];
            let (name, kind, list) = match step {
                0 => {
                    attributes.push(attr("network.protocol.name", "mqtt"));
                    attributes.push(attr("client.address", "127.0.0.1"));
                    (
                        "gate Chat/HD_CurrentRoom",
                        span::SpanKind::Server,
                        &mut gate,
                    )
                }
                1 => ("Chat/HD_CurrentRoom", span::SpanKind::Client, &mut gate),
                _ => ("Chat/HD_CurrentRoom", span::SpanKind::Server, &mut chat),
            };
            let start = now + request * 1000 + step * 100;
            list.push(Span {
                trace_id,
                span_id: id(step),
                parent_span_id: step.checked_sub(1).map(id).unwrap_or_default(),
                flags: 0x101,
                name: name.into(),
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 400_000 - step * 100_000,
                attributes,
                ..Default::default()
            });
        }
        let resource = |service: &str, spans| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = ExportTraceServiceRequest {
            resource_spans: vec![resource("Gate", gate), resource("Chat", chat)],
        }
        .encode_to_vec();
        let marks: Vec<usize> = body
            .windows(MARKER.len())
            .enumerate()
            .filter(|(_, w)| *w == MARKER)
            .map(|(at, _)| at)
            .collect();
        if marks.len() != BATCH {
            return Err(format!(
                "template: {} trace ids marked of {BATCH}",
                marks.len()
            ));
        }
        Ok(Template { body, marks })
    }

    /// Request `seq`'s body: new trace ids.
    fn body(&self, seq: u64) -> Bytes {
        let mut body = self.body.clone();
        for &at in &self.marks {
            body[at..at + 8].copy_from_slice(&(seq + 1).to_be_bytes());
        }
        Bytes::from(body)
    }
}

/// Posts to `addr` until `stop`, adding the spans accepted while `counting` to `accepted`.
async fn poster(
    addr: SocketAddr,
    template: Arc<Template>,
    seq: Arc<AtomicU64>,
    counting: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("collector {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("collector: {e}"))?;
    tokio::spawn(conn);
    let host = addr.to_string();
    while !stop.load(Ordering::Relaxed) {
        let request = hyper::Request::post("/v1/traces")
            .header(hyper::header::HOST, &host)
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(
                template.body(seq.fetch_add(1, Ordering::Relaxed)),
            ))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("collector: {e}"))?;
        let ok = response.status().is_success();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("collector: {e}"))?
            .to_bytes();
        if !ok {
            return Err(format!(
                "collector answered {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let rejected = ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_spans.max(0) as u64);
        if counting.load(Ordering::Relaxed) {
            accepted.fetch_add(BATCH as u64 - rejected, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Posters running against one collector.
struct Posting {
    counting: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Posting {
    fn start(addr: SocketAddr, template: &Arc<Template>, seq: &Arc<AtomicU64>) -> Posting {
        let counting = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let tasks = (0..POSTERS)
            .map(|_| {
                tokio::spawn(poster(
                    addr,
                    template.clone(),
                    seq.clone(),
                    counting.clone(),
                    stop.clone(),
                    accepted.clone(),
                ))
            })
            .collect();
        Posting {
            counting,
            stop,
            accepted,
            tasks,
        }
    }

    async fn stop(self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok(())
    }
}

/// Runs the rounds and prints each phase and the medians.
pub async fn run(cli: &Cli) -> Result<(), String> {
    let demo = DemoProcess::start(&["--sample-ratio", "1"])?;
    let addr: SocketAddr = demo
        .collector
        .parse()
        .map_err(|e| format!("collector address {}: {e}", demo.collector))?;
    let door = Door::parse(&demo.gate, Kind::Tcp, Some(demo.pid()))?;
    let template = Arc::new(Template::new()?);
    let seq = Arc::new(AtomicU64::new(0));
    println!(
        "collector: {POSTERS} keep-alive HTTP/1.1 connections, {BATCH} spans per POST /v1/traces \
         ({} bytes), {} s per phase; gate load: {} clients x {} in flight, untraced, {}",
        template.body.len(),
        cli.seconds,
        cli.clients,
        cli.inflight,
        cli.handler
    );
    let (mut idle, mut idle_cpu, mut busy, mut gate_alone, mut gate_busy) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..cli.rounds.max(1) {
        // Ingest alone.
        let posting = Posting::start(addr, &template, &seq);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu0 = cpu_seconds(demo.pid());
        posting.counting.store(true, Ordering::Relaxed);
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
        posting.counting.store(false, Ordering::Relaxed);
        let spans = posting.accepted.load(Ordering::Relaxed) as f64;
        let per_s = spans / t.elapsed().as_secs_f64();
        let cpu = cpu0.zip(cpu_seconds(demo.pid())).map(|(a, b)| b - a);
        posting.stop().await?;
        let us = cpu.map(|c| c * 1e6 / spans.max(1.0));
        println!(
            "{:<22} {per_s:>10.0} spans/s  demo CPU {} per span ({} spans/s per core)",
            "ingest, gate idle",
            us.map_or("-".into(), |u| format!("{u:.2} µs")),
            us.map_or("-".into(), |u| format!("{:.0}", 1e6 / u)),
        );
        idle.push(per_s);
        idle_cpu.extend(us);
        // Gate load alone, then gate load with ingest beside it.
        let alone = phase(cli, &door, Mode::Anonymous).await?;
        println!("{:<22} {:>10.0} req/s", "gate alone", alone.per_s);
        gate_alone.push(alone.per_s);
        let posting = Posting::start(addr, &template, &seq);
        posting.counting.store(true, Ordering::Relaxed);
        let t = Instant::now();
        let beside = phase(cli, &door, Mode::Anonymous).await?;
        let spans = posting.accepted.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
        posting.stop().await?;
        println!(
            "{:<22} {spans:>10.0} spans/s  gate {:.0} req/s beside it",
            "ingest, gate busy", beside.per_s
        );
        busy.push(spans);
        gate_busy.push(beside.per_s);
    }
    let (Some(i), Some(b), Some(ga), Some(gb)) = (
        median(&mut idle),
        median(&mut busy),
        median(&mut gate_alone),
        median(&mut gate_busy),
    ) else {
        return Err("nothing measured".into());
    };
    let per_core = median(&mut idle_cpu).map_or(String::new(), |u| {
        format!(
            ", {u:.2} µs of the demo's CPU per span ({:.0} spans/s per core)",
            1e6 / u
        )
    });
    println!(
        "median ingest with the gate idle: {i:.0} spans/s (target >= {TARGET:.0}){per_core}; \
         beside the gate under load: {b:.0} spans/s, the gate at {:.2}x its requests/s alone \
         ({gb:.0} against {ga:.0})",
        gb / ga
    );
    Ok(())
}
