//! RFC 9457 problem details: every error this API returns, from an operation or from the HTTP
//! layer (unknown route, wrong method, unparsable body, oversized body), has this JSON shape and
//! `Content-Type: application/problem+json`.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use engine::queue::QueueError;

/// A problem detail (RFC 9457).
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(skip_serializing_if_is_none)]
pub struct ProblemBody {
    /// A URI naming the problem type.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// What exactly was wrong with this request.
    pub detail: String,
}

/// The error responses of every operation.
#[derive(Debug, ApiResponse)]
pub enum Problem {
    /// The request is malformed: unparsable JSON, a missing or mistyped field, an unknown kind,
    /// an out-of-range value, a bad id.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<ProblemBody>),
    /// No valid access token: log in at /v1/auth/login and send `Authorization: Bearer …`.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<ProblemBody>),
    /// The caller's role may not do this (ops-only operations).
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<ProblemBody>),
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<ProblemBody>),
    /// The job is not in a state that allows this action, or an idempotency key was reused with
    /// different content.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<ProblemBody>),
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<ProblemBody>),
    /// Well-formed but not acceptable (a rule beyond the schema).
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<ProblemBody>),
    /// Over the per-user request rate; retry after `Retry-After` seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<ProblemBody>, #[oai(header = "Retry-After")] u64),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<ProblemBody>),
    /// The database cannot be reached right now; retry after `Retry-After` seconds.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<ProblemBody>, #[oai(header = "Retry-After")] u64),
}

fn body(status: StatusCode, detail: impl Into<String>) -> Json<ProblemBody> {
    let title = status.canonical_reason().unwrap_or("Error").to_string();
    let slug = title.to_lowercase().replace(' ', "-");
    Json(ProblemBody {
        type_: format!("https://stoflow.dev/problems/{slug}"),
        title,
        status: status.as_u16(),
        detail: detail.into(),
    })
}

impl Problem {
    pub fn bad_request(d: impl Into<String>) -> Self {
        Self::BadRequest(body(StatusCode::BAD_REQUEST, d))
    }
    pub fn unauthorized(d: impl Into<String>) -> Self {
        Self::Unauthorized(body(StatusCode::UNAUTHORIZED, d))
    }
    pub fn forbidden(d: impl Into<String>) -> Self {
        Self::Forbidden(body(StatusCode::FORBIDDEN, d))
    }
    pub fn too_many(d: impl Into<String>, retry_after_s: u64) -> Self {
        Self::TooManyRequests(body(StatusCode::TOO_MANY_REQUESTS, d), retry_after_s)
    }
    pub fn not_found(d: impl Into<String>) -> Self {
        Self::NotFound(body(StatusCode::NOT_FOUND, d))
    }
    pub fn conflict(d: impl Into<String>) -> Self {
        Self::Conflict(body(StatusCode::CONFLICT, d))
    }
    pub fn unprocessable(d: impl Into<String>) -> Self {
        Self::Unprocessable(body(StatusCode::UNPROCESSABLE_ENTITY, d))
    }
    pub fn unavailable(d: impl Into<String>) -> Self {
        Self::Unavailable(body(StatusCode::SERVICE_UNAVAILABLE, d), 1)
    }
    /// Logs the cause; the client gets no internals.
    pub fn internal(e: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::Internal(body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; it has been logged",
        ))
    }
}

impl From<QueueError> for Problem {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::NotFound => Problem::not_found("no job with this id"),
            QueueError::Conflict(d) => Problem::conflict(d),
            QueueError::Database(e) => e.into(),
        }
    }
}

impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Self {
        // Text Postgres cannot store (a NUL character, 22021) is the caller's input, not our fault.
        if let Some(db) = e.as_database_error()
            && matches!(db.code().as_deref(), Some("22021" | "22P05"))
        {
            return Problem::bad_request(
                "a text field holds a character that cannot be stored (NUL, \\u0000)",
            );
        }
        // Postgres down or restarting: say so at once, the client may retry (never a 500).
        if jobs::db::is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            return Problem::unavailable("the database is unavailable; retry shortly");
        }
        Problem::internal(&e)
    }
}

/// Turns every error that escaped an operation (routing, parsing, limits) into a problem response.
pub async fn render(err: poem::Error) -> Response {
    // Problems returned by operations already are complete responses.
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    if status.is_server_error() {
        tracing::error!(error = %err, "unhandled error");
    }
    let detail = if status.is_server_error() {
        "internal error; it has been logged".to_string()
    } else {
        // poem-openapi names path parameters by position; every route here has just `id`.
        err.to_string()
            .replace("path `param0`", "path parameter `id`")
    };
    let Json(b) = body(status, detail);
    let text = serde_json::to_string(&b).expect("problem serializes");
    Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .body(text)
        .into_response()
}
