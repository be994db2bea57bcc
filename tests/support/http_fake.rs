//! A real HTTP server on a free local port that records every request and answers as told.
//!
//! Answers queued with [`HttpFake::push`] are used in order; when none is queued the fake's
//! default answer applies. Requests are recorded before the answer is chosen, so a caller that
//! got any outcome (even a timeout) can read its request back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// How the fake answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A status with a body (sent as `application/json` whatever it holds).
    Reply { status: u16, body: Vec<u8> },
    /// Never answer: the caller's timeout decides.
    Hang,
    /// Answer after a pause, like a slow server.
    Delay {
        after: std::time::Duration,
        answer: Box<Answer>,
    },
}

impl Answer {
    pub fn json(status: u16, body: serde_json::Value) -> Answer {
        Answer::Reply {
            status,
            body: body.to_string().into_bytes(),
        }
    }

    pub fn raw(status: u16, body: &str) -> Answer {
        Answer::Reply {
            status,
            body: body.as_bytes().to_vec(),
        }
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the fake received it, in unix seconds (what a merchant checks a signature's
    /// timestamp against).
    pub received_at: i64,
    /// When the fake received it, on the monotonic clock (for spacing between requests).
    pub arrived: std::time::Instant,
}

impl Recorded {
    /// The first value of a header (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

type DefaultAnswer = Box<dyn Fn(&Recorded) -> Answer + Send + Sync>;

struct State {
    queue: VecDeque<Answer>,
    default: DefaultAnswer,
    requests: Vec<Recorded>,
}

pub struct HttpFake {
    base: String,
    state: Arc<Mutex<State>>,
    handle: ServerHandle,
}

impl HttpFake {
    /// Starts a fake that answers `default(request)` whenever no answer is queued.
    pub async fn start(default: impl Fn(&Recorded) -> Answer + Send + Sync + 'static) -> HttpFake {
        let state = Arc::new(Mutex::new(State {
            queue: VecDeque::new(),
            default: Box::new(default),
            requests: Vec::new(),
        }));
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
                .default_service(web::to(answer))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .bind(("127.0.0.1", 0))
        .expect("fake binds a free port");
        let address = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        HttpFake {
            base: format!("http://{address}"),
            state,
            handle,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Queues the answer to the next unanswered request.
    pub fn push(&self, answer: Answer) -> &Self {
        self.state
            .lock()
            .expect("fake state")
            .queue
            .push_back(answer);
        self
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().expect("fake state").requests.clone()
    }

    pub fn last_request(&self) -> Recorded {
        self.requests().pop().expect("the fake got a request")
    }
}

impl Drop for HttpFake {
    fn drop(&mut self) {
        // The stop command is sent at once; awaiting its completion is not needed.
        std::mem::drop(self.handle.stop(false));
    }
}

async fn answer(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let recorded = Recorded {
        method: request.method().to_string(),
        path: request.uri().to_string(),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: body.to_vec(),
        received_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        arrived: std::time::Instant::now(),
    };
    let answer = {
        let mut state = state.lock().expect("fake state");
        let answer = match state.queue.pop_front() {
            Some(answer) => answer,
            None => (state.default)(&recorded),
        };
        state.requests.push(recorded);
        answer
    };
    let answer = match answer {
        Answer::Delay { after, answer } => {
            tokio::time::sleep(after).await;
            *answer
        }
        other => other,
    };
    match answer {
        Answer::Reply { status, body } => {
            HttpResponse::build(StatusCode::from_u16(status).expect("valid status"))
                .content_type("application/json")
                .body(body)
        }
        Answer::Hang | Answer::Delay { .. } => std::future::pending().await,
    }
}

/// A local address nothing listens on: connecting to it is refused.
pub fn refused_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{address}")
}
