//! The gate: the client-facing MQTT server. Clients publish to `Module/HD_Handler/msgid` and
//! get the reply on the same topic. It also serves `Gate/Bind`, `Gate/UnBind` and `Gate/Push`
//! so handlers can change the session the gate keeps for a connection.

mod conn;
mod request;
pub mod topic;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub use rumqttc::mqttbytes::v4::Publish;

use crate::app::App;
use crate::config::GateSection;
use crate::error::RpcError;
use crate::rpc::{decode_args, HandlerFuture};
use crate::session::Session;
use crate::trace::ServiceTracer;
use conn::ConnShared;

/// The module name the gate registers its own handlers and spans under.
pub const GATE_MODULE: &str = "Gate";

/// The running gate: its settings, its connections by session id.
pub(crate) struct Gate {
    cfg: GateSection,
    app: App,
    server_id: String,
    tracer: ServiceTracer,
    conns: Mutex<HashMap<String, Arc<ConnShared>>>,
}

impl Gate {
    fn new_session_id(&self) -> String {
        format!("{:032x}", rand::random::<u128>())
    }

    fn register(&self, id: &str, c: Arc<ConnShared>) {
        self.lock().insert(id.to_string(), c);
    }

    fn unregister(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ConnShared>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to the stored session of connection `sessionid`.
    fn update(
        &self,
        sessionid: &str,
        f: impl FnOnce(&mut crate::session::SessionData),
    ) -> Result<(), RpcError> {
        let conn = self.lock().get(sessionid).cloned().ok_or_else(|| {
            RpcError::Handler(format!(
                "no client connection with session id `{sessionid}`"
            ))
        })?;
        f(&mut conn.data.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(())
    }
}

/// Binds the listener, registers the gate's handlers and spawns the accept loop.
pub(crate) async fn start(
    app: &App,
    cfg: GateSection,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(cfg.tcp_addr).await?;
    let addr = listener.local_addr()?;
    let gate = Arc::new(Gate {
        server_id: app.config().app.server_id.clone(),
        tracer: app.tracing().tracer(GATE_MODULE),
        app: app.clone(),
        conns: Mutex::new(HashMap::new()),
        cfg,
    });
    register_handlers(app, &gate);
    let task = tokio::spawn(accept_loop(gate, listener, shutdown));
    Ok((addr, task))
}

fn register_handlers(app: &App, gate: &Arc<Gate>) {
    fn handler<A, F>(gate: &Arc<Gate>, name: &'static str, f: F) -> crate::rpc::registry::HandlerFn
    where
        A: serde::de::DeserializeOwned,
        F: Fn(&Gate, &Session, A) -> Result<(), RpcError> + Send + Sync + Copy + 'static,
    {
        let weak = Arc::downgrade(gate);
        Box::new(move |session: Session, args: Vec<u8>| -> HandlerFuture {
            let r = match (weak.upgrade(), decode_args::<A>(name, &args)) {
                (None, _) => Err(RpcError::Unavailable("the gate has stopped".into())),
                (_, Err(e)) => Err(e),
                (Some(g), Ok(a)) => f(&g, &session, a).map(|()| b"null".to_vec()),
            };
            Box::pin(std::future::ready(r))
        })
    }
    let tracer = gate.tracer.clone();
    let reg = app.registry();
    reg.add(
        GATE_MODULE,
        "Bind",
        handler(gate, "Gate/Bind", |g, s, (userid,): (String,)| {
            g.update(s.sessionid(), |d| d.userid = userid)
        }),
        tracer.clone(),
    );
    reg.add(
        GATE_MODULE,
        "UnBind",
        handler(gate, "Gate/UnBind", |g, s, (): ()| {
            g.update(s.sessionid(), |d| d.userid.clear())
        }),
        tracer.clone(),
    );
    reg.add(
        GATE_MODULE,
        "Push",
        handler(
            gate,
            "Gate/Push",
            |g, s, (settings,): (BTreeMap<String, String>,)| {
                g.update(s.sessionid(), |d| d.settings.extend(settings))
            },
        ),
        tracer,
    );
}

async fn accept_loop(gate: Arc<Gate>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(gate.cfg.max_connections.max(1)));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "gate: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = gate.cfg.max_connections, "gate: connection limit reached; refusing");
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "gate: cannot set TCP_NODELAY");
        }
        let (gate, rx) = (gate.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = conn::serve(gate, stream, "tcp", peer.to_string(), rx).await {
                tracing::debug!(%peer, error = %e, "gate: connection closed on error");
            }
            drop(permit);
        });
    }
}
