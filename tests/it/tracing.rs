//! Traces over OTLP: a job's trace id links the API request, the worker's run and the run's
//! marketplace calls, exported by the real api and worker processes to a real OTLP/HTTP receiver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration::{Platform, eventually, worker};
use poem::{EndpointExt, Route, handler, listener::TcpAcceptor, post, web::Json};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// Spans received, each with the `service.name` of the process that sent it.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// An OTLP/HTTP receiver (`POST /v1/traces`, JSON encoding) on 127.0.0.1; returns its base URL.
async fn receiver(got: Received) -> String {
    #[handler]
    fn traces(Json(req): Json<Value>, got: poem::web::Data<&Received>) -> Json<Value> {
        let mut got = got.lock().unwrap();
        for rs in req["resourceSpans"].as_array().into_iter().flatten() {
            let service = attr(&rs["resource"], "service.name").unwrap_or_default();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    got.push((service.clone(), span.clone()));
                }
            }
        }
        Json(json!({}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
    let app = Route::new().at("/v1/traces", post(traces)).data(got);
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    format!("http://{addr}")
}

/// An attribute of a span or resource as text (OTLP JSON wraps values as `{"stringValue": ..}`,
/// `{"intValue": ..}`).
fn attr(of: &Value, key: &str) -> Option<String> {
    let kv = of["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?;
    let mut v = &kv["value"];
    while let Some(o) = v.as_object() {
        v = o.values().next()?;
    }
    Some(match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

// Multi-threaded: the receiver must answer while the test blocks waiting for the processes to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_trace_links_the_api_request_the_worker_run_and_its_marketplace_calls() {
    let got: Received = Arc::default();
    let endpoint = receiver(got.clone()).await;
    // Nothing is sent on a schedule within the test: every span arrives through the flush at
    // shutdown.
    let batch = ("OTEL_BSP_SCHEDULE_DELAY", "600000");
    // The API is pointed at the receiver by our setting, the worker by the standard variable.
    let mut p = Platform::start(0, &[("STOFLOW_TELEMETRY__OTLP_ENDPOINT", &endpoint), batch]).await;
    let mut env: Vec<(&'static str, &str)> = p
        .env
        .iter()
        .filter(|(k, _)| *k != "STOFLOW_TELEMETRY__OTLP_ENDPOINT")
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint));
    let mut w = worker(&p.db, &env);

    // Without a traceparent the API starts the trace; with one it continues the caller's.
    let r = p
        .api
        .http
        .post(p.api.url("/v1/jobs"))
        .json(&json!({"job": {"kind": "noop", "etsy_pings": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let trace = r.headers()["x-trace-id"].to_str().unwrap().to_string();
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let (caller_trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let r = p
        .api
        .http
        .post(p.api.url("/v1/jobs"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .json(&json!({"job": {"kind": "noop", "fail": "permanent"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-trace-id"], caller_trace);
    let id2 = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    p.api.wait_state(id, "done", T).await;
    p.api.wait_state(id2, "dead", T).await;
    assert!(got.lock().unwrap().is_empty(), "sent before shutdown");

    // SIGTERM: both processes flush what they hold before exiting.
    w.sigterm();
    p.api.proc.sigterm();
    assert!(w.wait_exit(T).is_some_and(|s| s.success()));
    assert!(p.api.proc.wait_exit(T).is_some_and(|s| s.success()));
    eventually(T, "the worker's and the API's spans", || {
        let got = got.lock().unwrap();
        let from = |svc: &str| got.iter().any(|(s, _)| s == svc);
        std::future::ready(from("stoflow-api") && from("stoflow-worker"))
    })
    .await;

    let got = got.lock().unwrap();
    let spans = |service: &str, trace_id: &str, name: &str| -> Vec<Value> {
        got.iter()
            .filter(|(s, span)| s == service && span["traceId"] == trace_id && span["name"] == name)
            .map(|(_, span)| span.clone())
            .collect()
    };
    // The API request span: a server span named by its method.
    let api = spans("stoflow-api", &trace, "POST");
    assert_eq!(api.len(), 1, "{got:#?}");
    assert_eq!(attr(&api[0], "url.path").as_deref(), Some("/v1/jobs"));
    assert_eq!(
        attr(&api[0], "http.response.status_code").as_deref(),
        Some("202")
    );
    // The run: a child of the stored trace id (a remote parent: only the trace id is stored).
    let run = spans("stoflow-worker", &trace, "job noop");
    assert_eq!(run.len(), 1, "{got:#?}");
    assert_eq!(attr(&run[0], "job.id"), Some(id.to_string()));
    assert_ne!(run[0]["parentSpanId"].as_str().unwrap_or(""), "");
    assert_ne!(
        run[0]["status"]["code"], 2,
        "a run that succeeded is no error"
    );
    // The marketplace calls, inside the run.
    let calls = spans("stoflow-worker", &trace, "GET etsy");
    assert_eq!(calls.len(), 2, "{got:#?}");
    for c in &calls {
        assert_eq!(c["parentSpanId"], run[0]["spanId"], "{c}");
        assert_eq!(attr(c, "marketplace").as_deref(), Some("etsy"));
        assert_eq!(attr(c, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(
            attr(c, "url.path").as_deref(),
            Some("/v3/application/openapi-ping")
        );
        assert_eq!(attr(c, "http.response.status_code").as_deref(), Some("200"));
    }

    // The caller's trace: the request span hangs under the caller's span, the (failing) run in
    // that trace.
    let api2 = spans("stoflow-api", caller_trace, "POST");
    assert_eq!(api2.len(), 1, "{got:#?}");
    assert_eq!(api2[0]["parentSpanId"], caller_span);
    let run2 = spans("stoflow-worker", caller_trace, "job noop");
    assert_eq!(run2.len(), 1, "{got:#?}");
    assert_eq!(attr(&run2[0], "job.id"), Some(id2.to_string()));
    // A failed run is an error span (status code 2, ERROR), so backends highlight it.
    assert_eq!(run2[0]["status"]["code"], 2, "{}", run2[0]);
}
