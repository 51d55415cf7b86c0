//! The demo service: an axum server whose one endpoint reads a [`Report`] from SQLite, once
//! through a singleflight group and once straight to the database, so the two can be
//! compared under the same load.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use singleflight_tokio::{CallFuture as _, Group};
use singleflight_tower::CoalesceLayer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::db::{Db, DbError, Report};

/// The response header that says how the request was served: `leader` (ran the query for
/// everyone in its flight), `shared` (received the leader's report) or `direct` (ran its
/// own query, on the uncoalesced route).
pub const ROLE_HEADER: &str = "x-singleflight-role";

/// The coalesced route: `GET /report/{customer}`.
pub const COALESCED: &str = "/report";

/// The same query without coalescing: `GET /uncoalesced/report/{customer}`.
pub const UNCOALESCED: &str = "/uncoalesced/report";

/// The uncoalesced handler behind `singleflight-tower`'s layer instead: `GET
/// /layer/report/{customer}`. Its [`ROLE_HEADER`] is the layer's debug header: `led` or
/// `joined`.
pub const LAYERED: &str = "/layer/report";

/// The service's state: the database and the group that coalesces report queries.
#[derive(Debug)]
pub struct App {
    db: Db,
    reports: Group<u64, Result<Report, DbError>>,
    layer: CoalesceLayer,
}

impl App {
    /// A service reading from `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            reports: Group::new(),
            layer: CoalesceLayer::new().debug_header(HeaderName::from_static(ROLE_HEADER)),
        }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The group coalescing report queries, keyed by customer.
    pub fn reports(&self) -> &Group<u64, Result<Report, DbError>> {
        &self.reports
    }

    /// The layer in front of the [`LAYERED`] route.
    pub fn layer(&self) -> &CoalesceLayer {
        &self.layer
    }

    /// The service's routes.
    pub fn router(self: Arc<Self>) -> Router {
        // The plain handler, coalesced by a layer: one line, no change to the handler.
        let layered = Router::new()
            .route(&format!("{LAYERED}/{{customer}}"), get(uncoalesced))
            .route_layer(self.layer.clone());
        Router::new()
            .route(&format!("{COALESCED}/{{customer}}"), get(coalesced))
            .route(&format!("{UNCOALESCED}/{{customer}}"), get(uncoalesced))
            .merge(layered)
            .with_state(self)
    }
}

/// Serves one customer's report; concurrent requests for the same customer share one query.
///
/// The query runs detached (spawned): if the client that started it disconnects, it still
/// finishes for everyone else waiting on it.
async fn coalesced(State(app): State<Arc<App>>, Path(customer): Path<u64>) -> Response {
    let db = app.db.clone();
    let (report, role) = app
        .reports
        .try_call_detached(&customer, move || async move { db.report(customer).await })
        .with_role()
        .await;
    let role = if role.is_leader() { "leader" } else { "shared" };
    respond(report.map_err(|error| error.to_string()), role)
}

/// Serves one customer's report with a query of its own.
async fn uncoalesced(State(app): State<Arc<App>>, Path(customer): Path<u64>) -> Response {
    let report = app.db.report(customer).await;
    respond(report.map_err(|error| error.to_string()), "direct")
}

fn respond(report: Result<Report, String>, role: &'static str) -> Response {
    match report {
        Ok(report) => {
            (StatusCode::OK, [(ROLE_HEADER, role)], format!("{report}\n")).into_response()
        }
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(ROLE_HEADER, role)],
            format!("{error}\n"),
        )
            .into_response(),
    }
}

/// A running server on a loopback port; [`shutdown`](Self::shutdown) stops it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl Server {
    /// Starts serving `app` on `127.0.0.1`, on a port the system picks.
    ///
    /// # Errors
    ///
    /// If the port cannot be bound.
    pub async fn start(app: Arc<App>) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app.router())
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self { addr, stop, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets open ones finish and waits for the server to end.
    ///
    /// # Errors
    ///
    /// If the server failed.
    pub async fn shutdown(self) -> io::Result<()> {
        let _ = self.stop.send(());
        self.task.await.map_err(io::Error::other)?
    }
}
