//! Attacks on the process's other doors: the viewer's API (7700), the OTLP collector (4318) and
//! the embedded broker (1883). OTLP bodies are written here by hand (a few protobuf fields), so
//! the bench needs no OpenTelemetry crate of its own.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{join, logged_in, raw_from};

/// A protobuf field of wire type 2 (length-delimited).
fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
    out.push(number << 3 | 2);
    let mut n = bytes.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(bytes);
}

/// An `ExportTraceServiceRequest` of `spans` spans of service `svc`, each of trace `trace + i`
/// (or all of trace `trace` when `one_trace`), with `attributes` empty attributes each.
fn otlp(svc: &str, trace: u128, spans: usize, attributes: usize, one_trace: bool) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut scope = Vec::new();
    for i in 0..spans {
        let mut span = Vec::new();
        let t = if one_trace { trace } else { trace + i as u128 };
        field(&mut span, 1, &t.to_be_bytes());
        field(&mut span, 2, &(i as u64 + 1).to_be_bytes());
        field(&mut span, 5, b"attack");
        span.push(7 << 3 | 1);
        span.extend_from_slice(&(now - 1_000_000).to_le_bytes());
        span.push(8 << 3 | 1);
        span.extend_from_slice(&now.to_le_bytes());
        for a in 0..attributes {
            let mut kv = Vec::new();
            field(&mut kv, 1, format!("k{a}").as_bytes());
            field(&mut span, 9, &kv);
        }
        field(&mut scope, 2, &span);
    }
    let mut value = Vec::new();
    field(&mut value, 1, svc.as_bytes());
    let mut kv = Vec::new();
    field(&mut kv, 1, b"service.name");
    field(&mut kv, 2, &value);
    let mut resource = Vec::new();
    field(&mut resource, 1, &kv);
    let mut rs = Vec::new();
    field(&mut rs, 1, &resource);
    field(&mut rs, 2, &scope);
    let mut req = Vec::new();
    field(&mut req, 1, &rs);
    req
}

/// One HTTP/1.1 request on a new connection, read to its end; its status, 0 on failure.
async fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return 0;
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes()).await.is_err() || s.write_all(body).await.is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(answer.get(9..12).unwrap_or_default())
        .parse()
        .unwrap_or(0)
}

/// Posts each of `bodies` to the collector in a loop of its own until the attack ends.
async fn post_in_loops(t: super::Target, bodies: Vec<Vec<u8>>) {
    let tasks = bodies.into_iter().map(|body| {
        let t = t.clone();
        tokio::spawn(async move {
            while t.running() {
                http(&t.collector, "POST", "/v1/traces", &body).await;
            }
        })
    });
    join(tasks.collect()).await;
}

/// The attacks on the viewer, the collector and the broker, by name.
pub(crate) fn attacks() -> Vec<(&'static str, super::Start)> {
    vec![
        ("8 concurrent trace searches with limit=1500", |t| {
            Box::pin(async move {
                let mut tasks = Vec::new();
                for _ in 0..8 {
                    let t = t.clone();
                    tasks.push(tokio::spawn(async move {
                        while t.running() {
                            let Ok(mut s) = TcpStream::connect(&t.viewer).await else { return };
                            let req = format!("GET /api/traces?limit=1500 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", t.viewer);
                            let _ = s.write_all(req.as_bytes()).await;
                            let mut sink = Vec::new();
                            let _ = s.read_to_end(&mut sink).await;
                        }
                    }));
                }
                join(tasks).await;
            })
        }),
        ("2,000 idle connections to the viewer", |t| {
            Box::pin(async move {
                let mut held = Vec::new();
                for _ in 0..2000 {
                    if let Ok(s) = TcpStream::connect(&t.viewer).await {
                        held.push(s);
                    }
                }
                while t.running() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        }),
        (
            "one OTLP span of 200,000 attributes, then 10 reads at once",
            |t| {
                Box::pin(async move {
                    let trace = 0xfa7u128 << 64;
                    let _ = http(
                        &t.collector,
                        "POST",
                        "/v1/traces",
                        &otlp("fat", trace, 1, 200_000, true),
                    )
                    .await;
                    let path = format!("/api/traces/{trace:032x}");
                    while t.running() {
                        let reads = (0..10).map(|_| {
                            let (viewer, path) = (t.viewer.clone(), path.clone());
                            tokio::spawn(async move {
                                http(&viewer, "GET", &path, b"").await;
                            })
                        });
                        join(reads.collect()).await;
                    }
                })
            },
        ),
        (
            "a gate trace's id 1,500 times in one URL, 16 connections",
            |t| {
                Box::pin(async move {
                    let Some(c) = logged_in(&t, "fetcher").await else {
                        return;
                    };
                    let Ok(r) = c
                        .request(
                            "Chat/HD_JoinChat",
                            br#"{"roomName":"x"}"#,
                            rumqttc::QoS::AtMostOnce,
                        )
                        .await
                    else {
                        return;
                    };
                    let id = r["TraceId"].as_str().unwrap_or_default().to_string();
                    let path = format!(
                        "/api/traces?{}",
                        vec![format!("traceID={id}"); 1_500].join("&")
                    );
                    let tasks = (0..16).map(|_| {
                        let (t, path) = (t.clone(), path.clone());
                        tokio::spawn(async move {
                            while t.running() {
                                http(&t.viewer, "GET", &path, b"").await;
                            }
                        })
                    });
                    join(tasks.collect()).await;
                })
            },
        ),
        (
            "70 connections to each of 7700 and 4318, a byte every 5 s",
            |t| {
                Box::pin(async move {
                    let mut tasks = Vec::new();
                    for addr in [t.viewer.clone(), t.collector.clone()] {
                        for _ in 0..70 {
                            let (t, addr) = (t.clone(), addr.clone());
                            tasks.push(tokio::spawn(async move {
                                // Connect again whenever the server closes the connection.
                                while t.running() {
                                    let from: IpAddr = [127, 0, 0, 6].into();
                                    let Some(mut s) = raw_from(from, &addr).await else {
                                        tokio::time::sleep(Duration::from_millis(200)).await;
                                        continue;
                                    };
                                    let head = b"GET /api/services HTTP/1.1\r\nHost: x\r\nX-Slow: ";
                                    for b in head.iter().chain(std::iter::repeat(&b'a')) {
                                        if !t.running() || s.write_all(&[*b]).await.is_err() {
                                            break;
                                        }
                                        tokio::time::sleep(Duration::from_secs(5)).await;
                                    }
                                }
                            }));
                        }
                    }
                    join(tasks).await;
                })
            },
        ),
        ("4 clients posting 3 MB OTLP bodies in a loop", |t| {
            Box::pin(async move {
                let bodies = (0..4u128).map(|i| otlp("bulk", (0xb0 + i) << 64, 1_000, 300, false));
                post_in_loops(t, bodies.collect()).await;
            })
        }),
        (
            "4 clients posting 4 MB bodies of 1.9M empty spans in a loop",
            |t| {
                Box::pin(async move {
                    // Request { ResourceSpans { ScopeSpans { Span {} x 1.9M } } }.
                    let mut scope = Vec::new();
                    for _ in 0..1_900_000 {
                        field(&mut scope, 2, b"");
                    }
                    let mut rs = Vec::new();
                    field(&mut rs, 2, &scope);
                    let mut body = Vec::new();
                    field(&mut body, 1, &rs);
                    post_in_loops(t, vec![body; 4]).await;
                })
            },
        ),
        (
            "16 connections asking for a 1 MiB trace 8 times each, never reading",
            |t| {
                Box::pin(async move {
                    let trace = 0x3ead_u128 << 64;
                    let _ = http(
                        &t.collector,
                        "POST",
                        "/v1/traces",
                        &otlp("wide", trace, 2_000, 120, true),
                    )
                    .await;
                    let get = format!("GET /api/traces/{trace:032x} HTTP/1.1\r\nHost: x\r\n\r\n");
                    let tasks = (0..16).map(|_| {
                        let (t, get) = (t.clone(), get.repeat(8));
                        tokio::spawn(async move {
                            // Connect again whenever the server closes the connection.
                            while t.running() {
                                let from: IpAddr = [127, 0, 0, 7].into();
                                let Some(mut s) = raw_from(from, &t.viewer).await else {
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                    continue;
                                };
                                if s.write_all(get.as_bytes()).await.is_err() {
                                    continue;
                                }
                                // Never read; held past the server's 10 s write deadline.
                                let until = tokio::time::Instant::now() + Duration::from_secs(15);
                                while t.running() && tokio::time::Instant::now() < until {
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                                drop(s);
                            }
                        })
                    });
                    join(tasks.collect()).await;
                })
            },
        ),
        ("1,000 retained 1 MB messages to the embedded broker", |t| {
            Box::pin(async move {
                let Some((host, port)) = t
                    .broker
                    .as_ref()
                    .and_then(|b| b.rsplit_once(':'))
                    .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                else {
                    return;
                };
                let mut opts = MqttOptions::new("hoarder", host, port);
                opts.set_max_packet_size(Some(2 << 20));
                let (client, mut events) = AsyncClient::new(opts, 16);
                // Polled until its first error: cut off, it does not come back.
                let poll = tokio::spawn(async move { while events.poll().await.is_ok() {} });
                let payload = vec![b'x'; 1 << 20];
                for i in 0..1_000 {
                    if !t.running() {
                        break;
                    }
                    let topic = format!("junk/{i}");
                    let publish = client.publish(topic, QoS::AtMostOnce, true, payload.clone());
                    if tokio::time::timeout(Duration::from_secs(1), publish)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                while t.running() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                poll.abort();
            })
        }),
    ]
}
