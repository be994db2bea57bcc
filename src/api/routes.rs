//! The table of `/v1` routes: the one list from which the server registers the merchant API
//! and the OpenAPI description ([`super::openapi`]) builds its operations.
//!
//! Each route is a [`V1Route`]; the server registers exactly [`V1Route::ALL`] (through [`v1`],
//! nothing else registers a `/v1` path) and the description has one operation per route, chosen
//! by an exhaustive `match`. A route added here without a description, or a description of a
//! route that is not here, does not compile; the tests check that nothing registers a `/v1`
//! path elsewhere and that every described route answers.

use super::{list, openapi, sandbox, sessions, stats};
use actix_web::dev::ResourceDef;
use actix_web::http::Method;
use actix_web::web;

/// One route of the merchant API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Route {
    StartSession,
    ListSessions,
    GetSession,
    CancelSession,
    CheckCode,
    Stats,
    SandboxMessages,
    SandboxInbound,
    OpenApi,
}

impl V1Route {
    /// Every route, in the order the description lists them.
    pub const ALL: [V1Route; 9] = [
        V1Route::StartSession,
        V1Route::ListSessions,
        V1Route::GetSession,
        V1Route::CancelSession,
        V1Route::CheckCode,
        V1Route::Stats,
        V1Route::SandboxMessages,
        V1Route::SandboxInbound,
        V1Route::OpenApi,
    ];

    /// The HTTP method.
    pub fn method(self) -> Method {
        match self {
            V1Route::StartSession
            | V1Route::CancelSession
            | V1Route::CheckCode
            | V1Route::SandboxInbound => Method::POST,
            V1Route::ListSessions
            | V1Route::GetSession
            | V1Route::Stats
            | V1Route::SandboxMessages
            | V1Route::OpenApi => Method::GET,
        }
    }

    /// The path, with `{id}` for a session id as actix and OpenAPI both write it.
    pub fn path(self) -> &'static str {
        match self {
            V1Route::StartSession | V1Route::ListSessions => "/v1/sessions",
            V1Route::GetSession => "/v1/sessions/{id}",
            V1Route::CancelSession => "/v1/sessions/{id}/cancel",
            V1Route::CheckCode => "/v1/sessions/{id}/check",
            V1Route::Stats => "/v1/stats",
            V1Route::SandboxMessages => "/v1/sandbox/messages",
            V1Route::SandboxInbound => "/v1/sandbox/inbound",
            V1Route::OpenApi => "/v1/openapi.json",
        }
    }

    /// The actix route: this method, to this route's handler.
    fn route(self) -> actix_web::Route {
        let route = web::method(self.method());
        match self {
            V1Route::StartSession => route.to(sessions::start),
            V1Route::ListSessions => route.to(list::list),
            V1Route::GetSession => route.to(sessions::get),
            V1Route::CancelSession => route.to(sessions::cancel),
            V1Route::CheckCode => route.to(sessions::check),
            V1Route::Stats => route.to(stats::stats),
            V1Route::SandboxMessages => route.to(sandbox::sandbox_messages),
            V1Route::SandboxInbound => route.to(sandbox::sandbox_inbound),
            V1Route::OpenApi => route.to(openapi::serve),
        }
    }
}

/// The methods the `/v1` routes take at `path`, in table order; empty when none matches it.
/// Only requests no route took get here, so it costs the served ones nothing.
pub fn methods_of(path: &str) -> Vec<Method> {
    let mut methods: Vec<Method> = Vec::new();
    for route in V1Route::ALL {
        if ResourceDef::new(route.path()).is_match(path) && !methods.contains(&route.method()) {
            methods.push(route.method());
        }
    }
    methods
}

/// Registers every `/v1` route.
pub fn v1(cfg: &mut web::ServiceConfig) {
    for route in V1Route::ALL {
        cfg.route(route.path(), route.route());
    }
}
