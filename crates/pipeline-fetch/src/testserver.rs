//! A small, real HTTP/1.1 server on `127.0.0.1` for tests (feature
//! `test-server`): it serves fixed bodies from a map of routes, honours
//! `Range: bytes=N-` (and `N-M`), counts and records every request, and
//! injects faults per route so that a test can drive a client through the
//! failures it must survive: an error status, a connection dropped mid-body,
//! a slow body, a server that ignores `Range`.
//!
//! It knows nothing about what it serves (no hub, no archives): a test that
//! needs the hub's JSON API registers the JSON bodies under the API's paths.
//! Each connection is answered on its own thread and closed after one
//! response (`Connection: close`), which keeps the server simple and makes
//! every request a fresh connection that the counts see.
//!
//! ```no_run
//! use pipeline_fetch::testserver::{Fault, TestServer};
//! let server = TestServer::start();
//! server.add("/data/a.bin", vec![7u8; 1000]);
//! server.fault("/data/a.bin", Fault::Status { code: 503, first: 2 });
//! let url = server.url("/data/a.bin");
//! // ... fetch `url`: the first two requests get 503, the third the bytes ...
//! assert_eq!(server.hits("/data/a.bin"), 3);
//! ```
//!
//! Routes are keyed by the request target: a request for `/p?q=1` is served
//! by the route `/p?q=1` when one is registered, else by the route `/p`. A
//! request for no route gets `404 Not Found` (and is still recorded).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A fault injected into the answers of one route. Each applies to the
/// route's first `first` requests (counted from 0 over that route's hits),
/// so `first: 2` fails twice and then lets the request through.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and a short text body) instead of the body.
    /// A 503 or 429 carries `Retry-After: 0`.
    Status { code: u16, first: u32 },
    /// Send the headers (with the full `Content-Length`) and `bytes` bytes
    /// of the body, then close the connection.
    DropAfter { bytes: u64, first: u32 },
    /// Send the body in `chunk`-byte pieces with `delay` before each.
    Slow {
        chunk: usize,
        delay: Duration,
        first: u32,
    },
    /// Answer `200` with the whole body even when the request asks for a range.
    IgnoreRange { first: u32 },
}

impl Fault {
    fn first(&self) -> u32 {
        match self {
            Fault::Status { first, .. }
            | Fault::DropAfter { first, .. }
            | Fault::Slow { first, .. }
            | Fault::IgnoreRange { first } => *first,
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target: path and query (`/api/x?recursive=true`).
    pub target: String,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Route {
    body: Arc<Vec<u8>>,
    headers: Vec<(String, String)>,
    faults: Vec<Fault>,
    hits: u32,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    requests: Vec<Request>,
}

/// The server; it stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `127.0.0.1` on a free port, serving nothing yet.
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("the listener's address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || {
                        // A client that hangs up early is the client's business.
                        let _ = serve(conn, &state);
                    });
                }
            })
        };
        TestServer {
            addr,
            state,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Serves `body` at `path` (a request target, query included if it
    /// matters), replacing any earlier route there; its faults and counts
    /// start afresh.
    pub fn add(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.add_with_headers(path, body, &[]);
    }

    /// As [`TestServer::add`], with extra response headers (`Link`,
    /// `Content-Type`, ...).
    pub fn add_with_headers(&self, path: &str, body: impl Into<Vec<u8>>, headers: &[(&str, &str)]) {
        let route = Route {
            body: Arc::new(body.into()),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Route::default()
        };
        self.lock().routes.insert(path.to_string(), route);
    }

    /// Adds a fault to the route at `path` (registered before).
    pub fn fault(&self, path: &str, fault: Fault) {
        let mut st = self.lock();
        let route = st
            .routes
            .get_mut(path)
            .unwrap_or_else(|| panic!("testserver: no route {path} to add a fault to"));
        route.faults.push(fault);
    }

    /// How many requests the route at `path` has answered.
    pub fn hits(&self, path: &str) -> u32 {
        self.lock().routes.get(path).map_or(0, |r| r.hits)
    }

    /// Every request received whose target is `path` or starts with `path?`.
    pub fn requests(&self, path: &str) -> Vec<Request> {
        let with_query = format!("{path}?");
        self.lock()
            .requests
            .iter()
            .filter(|r| r.target == path || r.target.starts_with(&with_query))
            .cloned()
            .collect()
    }

    /// Every request received, in order.
    pub fn all_requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// What the server decided to send for one request.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Arc<Vec<u8>>,
    start: usize,
    end: usize,
    drop_after: Option<u64>,
    slow: Option<(usize, Duration)>,
}

fn serve(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let request = Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
    };
    let answer = decide(&request, state);
    write_answer(conn, &request, answer)
}

fn decide(req: &Request, state: &Mutex<State>) -> Answer {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    st.requests.push(req.clone());
    let path = req.target.split('?').next().unwrap_or_default();
    let key = if st.routes.contains_key(&req.target) {
        req.target.clone()
    } else {
        path.to_string()
    };
    let Some(route) = st.routes.get_mut(&key) else {
        return text(404, "no such path");
    };
    let hit = route.hits;
    route.hits += 1;
    let active: Vec<Fault> = route
        .faults
        .iter()
        .filter(|f| hit < f.first())
        .cloned()
        .collect();
    if let Some(code) = active.iter().find_map(|f| match f {
        Fault::Status { code, .. } => Some(*code),
        _ => None,
    }) {
        let mut a = text(code, "injected failure");
        if code == 503 || code == 429 {
            a.headers.push(("Retry-After".into(), "0".into()));
        }
        return a;
    }
    let ignore_range = active
        .iter()
        .any(|f| matches!(f, Fault::IgnoreRange { .. }));
    let len = route.body.len();
    let mut answer = Answer {
        status: 200,
        headers: route.headers.clone(),
        body: route.body.clone(),
        start: 0,
        end: len,
        drop_after: active.iter().find_map(|f| match f {
            Fault::DropAfter { bytes, .. } => Some(*bytes),
            _ => None,
        }),
        slow: active.iter().find_map(|f| match f {
            Fault::Slow { chunk, delay, .. } => Some(((*chunk).max(1), *delay)),
            _ => None,
        }),
    };
    answer
        .headers
        .push(("Accept-Ranges".into(), "bytes".into()));
    match req
        .header("range")
        .filter(|_| !ignore_range)
        .map(parse_range)
    {
        None => {}
        Some(Some((start, end))) if start < len => {
            let end = end.map_or(len, |e| (e + 1).min(len));
            answer.status = 206;
            answer.start = start;
            answer.end = end;
            answer.headers.push((
                "Content-Range".into(),
                format!("bytes {start}-{}/{len}", end - 1),
            ));
        }
        Some(_) => {
            let mut a = text(416, "range not satisfiable");
            a.headers
                .push(("Content-Range".into(), format!("bytes */{len}")));
            return a;
        }
    }
    answer
}

/// `bytes=N-` or `bytes=N-M` (one range; M inclusive).
fn parse_range(v: &str) -> Option<(usize, Option<usize>)> {
    let spec = v.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => None,
        b => Some(b.parse().ok()?),
    };
    Some((start, end))
}

fn text(status: u16, msg: &str) -> Answer {
    let body = Arc::new(msg.as_bytes().to_vec());
    Answer {
        status,
        headers: vec![("Content-Type".into(), "text/plain".into())],
        end: body.len(),
        body,
        start: 0,
        drop_after: None,
        slow: None,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_answer(mut conn: TcpStream, req: &Request, a: Answer) -> std::io::Result<()> {
    let body = &a.body[a.start..a.end];
    let mut head = format!("HTTP/1.1 {} {}\r\n", a.status, reason(a.status));
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    conn.write_all(head.as_bytes())?;
    if req.method == "HEAD" {
        return Ok(());
    }
    let body = match a.drop_after {
        Some(n) => &body[..(n as usize).min(body.len())],
        None => body,
    };
    match a.slow {
        Some((chunk, delay)) => {
            for piece in body.chunks(chunk) {
                std::thread::sleep(delay);
                conn.write_all(piece)?;
                conn.flush()?;
            }
        }
        None => conn.write_all(body)?,
    }
    conn.flush()?;
    if a.drop_after.is_some() {
        conn.shutdown(std::net::Shutdown::Both)?;
    }
    Ok(())
}
