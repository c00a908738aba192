//! A handler's `#[cfg]` (or `#[cfg_attr(.., cfg(..))]`) applies to everything generated for it:
//! its dispatch shim, its registration, its entry in `METHODS` and its client method. Handlers
//! that are never built may name types that do not exist.
use mqrs_runtime::{rpc, rpc_module, App, Config, Session};

pub struct Flags {
    app: App,
}

#[rpc_module]
impl Flags {
    #[rpc]
    async fn always(&self, _session: Session) -> Result<u8, String> {
        Ok(0)
    }

    #[cfg(any())]
    #[rpc]
    async fn never(&self, _session: Session, x: DoesNotExist) -> Result<Missing, String> {
        Ok(x.into())
    }

    #[rpc]
    #[cfg(all())]
    async fn enabled(&self, session: Session, n: u8) -> Result<u8, String> {
        // The client method exists too.
        let _ = FlagsClient::new(&self.app).always(&session);
        Ok(n)
    }

    #[rpc]
    #[cfg_attr(all(), cfg(any()))]
    async fn attr_never(&self, _session: Session, _x: AlsoMissing) -> Result<(), String> {
        Ok(())
    }

    #[rpc]
    #[cfg_attr(any(), cfg(any()))]
    async fn attr_enabled(&self, _session: &Session) -> Result<(), String> {
        Ok(())
    }

    // Two versions of one handler, exactly one of them built.
    #[rpc]
    #[cfg(all())]
    async fn either(&self, _session: Session) -> Result<String, String> {
        Ok("built".into())
    }

    #[rpc]
    #[cfg(not(all()))]
    async fn either(&self, _session: Session) -> Result<String, String> {
        Ok("not built".into())
    }
}

fn main() {
    use mqrs_runtime::RpcModule;
    assert_eq!(
        <Flags as RpcModule>::METHODS,
        &["always", "enabled", "attr_enabled", "either"]
    );
    let app = App::new(Config::default());
    app.add_module(Flags { app: app.clone() })
        .expect("every handler in METHODS registered");
    let registered: Vec<String> = app
        .handlers()
        .into_iter()
        .filter(|h| h.starts_with("Flags/"))
        .collect();
    assert_eq!(
        registered,
        [
            "Flags/always",
            "Flags/attr_enabled",
            "Flags/either",
            "Flags/enabled"
        ],
        "no registration for a handler that is not built"
    );
    let client = FlagsClient::new(&app);
    let _ = client.enabled(&Session::default(), 1);
    let _ = client.attr_enabled(&Session::default());
    let _ = client.either(&Session::default());
}
