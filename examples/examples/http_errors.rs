//! Errors of coalesced calls as HTTP statuses, in an axum handler.
//!
//! The handler calls the group with `?`: one `From` impl turns the call's error into the
//! handler's error type, and its `IntoResponse` picks the status with `Error::http_status`:
//! the work's own errors map as the service decides (a missing user is 404), the call errors
//! as the library suggests (a timeout is 504, a dropped leader 503, a panic 500).
//!
//! It serves on 127.0.0.1, sends one request per case with its own client, prints each
//! status and exits non-zero if one is not the expected one:
//!
//! ```sh
//! cargo run -p singleflight-examples --example http_errors
//! ```

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use singleflight_examples::load;
use singleflight_tokio::{Error, Group};
use tokio::net::TcpListener;

/// How long a request waits for the lookup; the lookup itself goes on (it is detached).
const TIMEOUT: Duration = Duration::from_millis(100);

/// The work's own error. `Clone`, so the group shares it with every waiter as it is (an
/// error that is not `Clone` would use `try_call_detached_arc` and arrive as an `Arc`).
#[derive(Clone, Debug)]
enum LookupError {
    NotFound(u64),
    Unavailable,
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound(id) => write!(f, "no user {id}"),
            Self::Unavailable => f.write_str("the user directory is unavailable"),
        }
    }
}

impl std::error::Error for LookupError {}

/// The handler's error: whatever a coalesced lookup ended with.
#[derive(Debug)]
struct ApiError(Error<LookupError>);

/// What lets the handler write `?` after a call.
impl From<Error<LookupError>> for ApiError {
    fn from(error: Error<LookupError>) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.http_status(|error| match error {
            LookupError::NotFound(_) => 404,
            LookupError::Unavailable => 503,
        });
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, format!("{}\n", self.0)).into_response()
    }
}

/// The lookup every concurrent request for one id shares. Id 404 does not exist, id 503
/// finds the directory down, and id 0 takes longer than any request waits.
async fn lookup(id: u64) -> Result<String, LookupError> {
    match id {
        404 => Err(LookupError::NotFound(id)),
        503 => Err(LookupError::Unavailable),
        0 => {
            tokio::time::sleep(TIMEOUT * 20).await;
            Ok("a slow user".to_string())
        }
        _ => Ok(format!("user {id}")),
    }
}

/// `GET /users/{id}`: the lookup runs detached, so a request that times out leaves it
/// running for the others.
async fn user(
    State(users): State<Group<u64, Result<String, LookupError>>>,
    Path(id): Path<u64>,
) -> Result<String, ApiError> {
    let name = users
        .try_call_detached_timeout(&id, TIMEOUT, move || lookup(id))
        .await?;
    Ok(format!("{name}\n"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    // Cloning a group shares it: axum hands each request a clone of the state.
    let users = Group::<u64, Result<String, LookupError>>::new();
    let app = Router::new()
        .route("/users/{id}", get(user))
        .with_state(users);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut failures = 0;
    for (id, want) in [(7, 200), (404, 404), (503, 503), (0, 504)] {
        let response = load::get(addr, &format!("/users/{id}")).await?;
        println!(
            "GET /users/{id}: {} {}",
            response.status,
            response.body.trim_end()
        );
        if response.status != want {
            println!("   expected {want}");
            failures += 1;
        }
    }
    server.abort();
    if failures > 0 {
        return Err(std::io::Error::other(format!(
            "{failures} unexpected status(es)"
        )));
    }
    println!("every error mapped to its status");
    Ok(())
}
