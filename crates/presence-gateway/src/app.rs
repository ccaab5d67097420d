//! The gateway as one value: the backend, auth, the hub, metrics, limits
//! and the shutdown signal, shared by every handler and socket task; plus
//! the dispatcher that turns backend updates into socket frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use presence_backend::{Backend, ConnId, SharedRateLimits, Update};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::budget::{ConnectionBudget, SocketBudget};
use crate::config::GatewayConfig;
use crate::frames;
use crate::hub::{CloseReason, Frame, Hub};
use crate::metrics::Metrics;
use crate::ratelimit::UserLimiters;

/// Everything a request handler or socket task can reach.
pub struct App {
    pub backend: Arc<dyn Backend>,
    pub auth: Authenticator,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub config: GatewayConfig,
    /// Per-user limits on status and status-text changes, exact on one
    /// node.
    pub limiters: UserLimiters,
    /// In a cluster, the same limits shared by every gateway; they then
    /// replace `limiters`.
    pub shared_limits: Option<Arc<dyn SharedRateLimits>>,
    /// Set on SIGTERM: `/readyz` fails and new sockets are refused.
    pub draining: AtomicBool,
    /// Cancelled when the process stops; every task listens.
    pub shutdown: CancellationToken,
    /// Tracks socket tasks so shutdown can wait for them.
    pub sockets: TaskTracker,
    /// X6: sockets per user on this node.
    pub socket_budget: Arc<SocketBudget>,
    /// Open client connections of the API listener (`--max-connections`).
    pub connections: Arc<ConnectionBudget>,
    next_conn: AtomicU64,
}

impl App {
    /// A gateway whose per-user limits are its own (one node).
    pub fn new(
        backend: Arc<dyn Backend>,
        auth: Authenticator,
        metrics: Metrics,
        config: GatewayConfig,
    ) -> Arc<App> {
        App::with_shared_limits(backend, None, auth, metrics, config)
    }

    /// A gateway whose per-user limits are `shared_limits` when given
    /// (cluster mode), else its own.
    pub fn with_shared_limits(
        backend: Arc<dyn Backend>,
        shared_limits: Option<Arc<dyn SharedRateLimits>>,
        auth: Authenticator,
        metrics: Metrics,
        config: GatewayConfig,
    ) -> Arc<App> {
        let app = App {
            limiters: UserLimiters::new(&config.rate_limits),
            shared_limits,
            backend,
            auth,
            hub: Arc::new(Hub::new()),
            metrics: Arc::new(metrics),
            draining: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            sockets: TaskTracker::new(),
            socket_budget: SocketBudget::new(config.max_sockets_per_user),
            connections: ConnectionBudget::new(config.max_connections),
            config,
            // Random high bits keep ids unique across nodes and restarts.
            next_conn: AtomicU64::new(rand::random::<u64>() & !0xffff_ffff),
        };
        Arc::new(app)
    }

    /// The full HTTP surface: WebSocket, native REST, Rocket.Chat REST and
    /// the operational endpoints.
    pub fn router(self: &Arc<App>) -> Router {
        Router::new()
            .merge(crate::ws::routes())
            .merge(crate::rest::routes())
            .merge(crate::rocketchat::routes())
            .merge(crate::console::routes())
            .merge(crate::ops::routes(self.config.metrics_on_main_listener))
            .fallback(crate::rest::no_such_route)
            .with_state(self.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.metrics.clone(),
                crate::metrics::track_http_requests,
            ))
    }

    /// Only the operational endpoints: the metrics listener, and the main
    /// listener of aggregator-only nodes.
    pub fn ops_router(self: &Arc<App>) -> Router {
        crate::ops::routes(true)
            .fallback(crate::rest::no_such_route)
            .with_state(self.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.metrics.clone(),
                crate::metrics::track_http_requests,
            ))
    }

    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts the task that fans backend updates out to sockets.
    pub async fn start_dispatcher(self: &Arc<App>) {
        let app = self.clone();
        // Updates of users no socket here wants need not even be decoded.
        app.backend.set_interest(app.hub.clone());
        if let Ok(state) = app.backend.cap_state().await {
            app.hub.set_presence_active(state.enabled);
        }
        let mut updates = app.backend.subscribe();
        tokio::spawn(async move {
            loop {
                let update = tokio::select! {
                    () = app.shutdown.cancelled() => break,
                    update = updates.recv() => update,
                };
                match update {
                    Ok(update) => app.deliver(update),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "update receiver lagged; resyncing watched users");
                        app.metrics.pubsub_lagged.inc();
                        app.metrics
                            .resyncs
                            .with_label_values(&["gateway_lagged"])
                            .inc();
                        app.resync_watched().await;
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }

    /// Hands one backend update to the sockets that want it.
    pub fn deliver(self: &Arc<App>, update: Update) {
        match update {
            Update::Presence {
                snapshot,
                changed_at,
            } => {
                self.metrics.status_changes.inc();
                if !self.hub.presence_active() {
                    return; // X2: no real-time updates while disabled.
                }
                let frame = Frame {
                    version: snapshot.version,
                    json: frames::presence(&snapshot),
                    changed_at: Some(changed_at),
                };
                self.hub.for_watchers(&snapshot.user, |conn| {
                    conn.push_update(&snapshot.user, frame.clone());
                });
            }
            Update::SelfState(me) => {
                let frame = Frame {
                    version: me.version,
                    json: frames::me(&me),
                    changed_at: None,
                };
                for conn in self.hub.owners_of(&me.user) {
                    conn.push_me(frame.clone());
                }
            }
            Update::Broadcast { active } => {
                let was = self.hub.presence_active();
                self.hub.set_presence_active(active);
                self.metrics.cap_enabled.set(i64::from(active));
                if was == active {
                    return;
                }
                // X3: every connected user and admin is told.
                let notice = frames::notice(if active {
                    "presence_active"
                } else {
                    "presence_inactive"
                });
                for conn in self.hub.all_conns() {
                    conn.push_control(notice.clone(), self.config.max_control_queue);
                }
                if active {
                    // Watchers missed everything while disabled: catch up.
                    let app = self.clone();
                    tokio::spawn(async move { app.resync_watched().await });
                }
            }
            Update::Settings(_) => {}
            Update::Replaced { user, conn } => {
                // D1: a newer socket of the same device opened on another
                // node.
                for old in self.hub.owners_of(&user) {
                    if old.id == conn {
                        old.push_control(frames::notice("replaced"), self.config.max_control_queue);
                        old.request_close(CloseReason::Replaced);
                    }
                }
            }
        }
    }

    /// Re-reads every user watched on this node and offers the result to
    /// the watchers; versions drop what they already have.
    pub async fn resync_watched(&self) {
        let users = self.hub.watched_user_ids();
        for chunk in users.chunks(self.config.max_query_users.max(1)) {
            match self.backend.presence(chunk).await {
                Ok(snapshots) => {
                    for snapshot in snapshots {
                        let frame = Frame {
                            version: snapshot.version,
                            json: frames::presence(&snapshot),
                            changed_at: None,
                        };
                        self.hub.for_watchers(&snapshot.user, |conn| {
                            conn.push_update(&snapshot.user, frame.clone());
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "resync failed"),
            }
        }
    }

    /// SIGTERM: stop being ready, close sockets with 1001 spread over the
    /// drain window, wait for their tasks (which deregister the devices),
    /// then flush the backend.
    pub async fn drain(self: &Arc<App>) {
        self.draining.store(true, Ordering::Release);
        let conns = self.hub.all_conns();
        if !conns.is_empty() {
            let step = self.config.drain_window / conns.len() as u32;
            for conn in conns {
                // The protocol's `shutting_down` notice tells the client to
                // reconnect elsewhere with backoff; it was never sent.
                conn.push_control(
                    frames::notice("shutting_down"),
                    self.config.max_control_queue,
                );
                conn.request_close(CloseReason::ShuttingDown);
                tokio::time::sleep(step).await;
            }
        }
        self.sockets.close();
        let grace = self.config.write_timeout;
        if tokio::time::timeout(grace, self.sockets.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sockets did not close in time");
        }
        self.shutdown.cancel();
        self.backend.shutdown().await;
    }
}
