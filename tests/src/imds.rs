//! A cloud metadata service for the tests, as AWS documents IMDSv2: `PUT
//! /latest/api/token` (with `X-aws-ec2-metadata-token-ttl-seconds`) gives
//! a token; `GET /latest/meta-data/spot/instance-action` with it answers
//! 404 until the test arms a notice, then the notice's JSON; without a
//! valid token, 401; `GET /latest/meta-data/events/recommendations/rebalance`
//! answers 404 until the test arms a rebalance recommendation. It also
//! answers as Azure's Scheduled Events do: `GET /metadata/scheduledevents`
//! with `Metadata: true` (else 400), no events until the test arms a
//! `Preempt`. One server serves several nodes: each asks under its own
//! prefix (`http://ADDR/NODE`). It counts what it was asked.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Shared {
    /// node → the instance-action JSON it is answered.
    armed: HashMap<String, String>,
    /// node → the rebalance recommendation JSON it is answered.
    rebalance: HashMap<String, String>,
    /// node → the `NotBefore` of the Azure `Preempt` event it is answered.
    azure: HashMap<String, String>,
    tokens: Vec<String>,
    /// node → questions about its instance action.
    asked: HashMap<String, u32>,
    refused: u32,
}

/// The running server; it stops with the test's runtime.
pub struct Imds {
    pub addr: std::net::SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl Imds {
    /// Serves on `ip` (a free port); call inside a Tokio runtime.
    pub fn start(ip: &str) -> Self {
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind the metadata server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = shared.clone();
        tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&s, &req)) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        Self { addr, shared }
    }

    /// The endpoint node `node` is configured with.
    pub fn endpoint(&self, node: &str) -> String {
        format!("http://{}/{node}", self.addr)
    }

    /// From now on, `node` is told it is terminated at `time` (RFC 3339).
    pub fn arm(&self, node: &str, time: &str) {
        self.shared.lock().unwrap().armed.insert(
            node.into(),
            format!(r#"{{"action": "terminate", "time": "{time}"}}"#),
        );
    }

    /// `node` is a fresh instance again: no notice.
    pub fn disarm(&self, node: &str) {
        let mut s = self.shared.lock().unwrap();
        s.armed.remove(node);
        s.rebalance.remove(node);
        s.azure.remove(node);
    }

    /// From now on, `node` gets AWS's rebalance recommendation.
    pub fn arm_rebalance(&self, node: &str) {
        self.shared.lock().unwrap().rebalance.insert(
            node.into(),
            r#"{"noticeTime": "2026-12-03T17:58:00Z"}"#.into(),
        );
    }

    /// From now on, `node` is told by Azure's Scheduled Events that it is
    /// preempted (evicted) not before `at`.
    pub fn arm_azure(&self, node: &str, at: time::OffsetDateTime) {
        let http_date = at
            .to_offset(time::UtcOffset::UTC)
            .format(&time::format_description::well_known::Rfc2822)
            .expect("an RFC 2822 date")
            .replace("+0000", "GMT");
        self.shared
            .lock()
            .unwrap()
            .azure
            .insert(node.into(), http_date);
    }

    /// How often `node` asked about its instance action (with a token).
    pub fn asked(&self, node: &str) -> u32 {
        self.shared
            .lock()
            .unwrap()
            .asked
            .get(node)
            .copied()
            .unwrap_or(0)
    }

    /// Requests refused for want of a token.
    pub fn refused(&self) -> u32 {
        self.shared.lock().unwrap().refused
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

fn answer(s: &Mutex<Shared>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut s = s.lock().unwrap();
    let path = req.uri().path();
    let (node, rest) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""));
    let header = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok());
    match (req.method(), rest) {
        (&Method::PUT, "latest/api/token") => {
            if header("x-aws-ec2-metadata-token-ttl-seconds").is_none() {
                return reply(StatusCode::BAD_REQUEST, String::new());
            }
            let token = format!("t{}", s.tokens.len());
            s.tokens.push(token.clone());
            reply(StatusCode::OK, token)
        }
        (&Method::GET, "latest/meta-data/spot/instance-action") => {
            let ok =
                header("x-aws-ec2-metadata-token").is_some_and(|t| s.tokens.iter().any(|k| k == t));
            if !ok {
                s.refused += 1;
                return reply(StatusCode::UNAUTHORIZED, String::new());
            }
            *s.asked.entry(node.to_string()).or_default() += 1;
            match s.armed.get(node) {
                Some(json) => reply(StatusCode::OK, json.clone()),
                None => reply(StatusCode::NOT_FOUND, "Not Found".into()),
            }
        }
        (&Method::GET, "latest/meta-data/events/recommendations/rebalance") => {
            let ok =
                header("x-aws-ec2-metadata-token").is_some_and(|t| s.tokens.iter().any(|k| k == t));
            if !ok {
                s.refused += 1;
                return reply(StatusCode::UNAUTHORIZED, String::new());
            }
            match s.rebalance.get(node) {
                Some(json) => reply(StatusCode::OK, json.clone()),
                None => reply(StatusCode::NOT_FOUND, "Not Found".into()),
            }
        }
        (&Method::GET, "metadata/scheduledevents") => {
            if header("metadata") != Some("true") {
                s.refused += 1;
                return reply(StatusCode::BAD_REQUEST, String::new());
            }
            *s.asked.entry(node.to_string()).or_default() += 1;
            let events = match s.azure.get(node) {
                Some(at) => format!(
                    r#"[{{"EventId": "E1", "EventType": "Preempt", "ResourceType": "VirtualMachine", "Resources": ["{node}"], "EventStatus": "Scheduled", "NotBefore": "{at}", "Description": "", "EventSource": "Platform", "DurationInSeconds": -1}}]"#
                ),
                None => "[]".into(),
            };
            reply(
                StatusCode::OK,
                format!(r#"{{"DocumentIncarnation": 1, "Events": {events}}}"#),
            )
        }
        _ => reply(StatusCode::NOT_FOUND, String::new()),
    }
}
