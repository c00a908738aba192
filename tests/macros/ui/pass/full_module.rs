//! Everything a handler may look like, and the typed client it gets.
use mqrs_runtime::{rpc, rpc_module, App, Config, RpcError, Session};
use serde::Deserialize;

/// Only `Deserialize`: the handler compiles; only calling its client would need `Serialize`.
#[derive(Deserialize)]
pub struct OnlyIn {
    pub x: i32,
}

pub struct Everything {
    app: App,
}

type Reply<T> = Result<T, String>;

#[rpc_module(name = "Every")]
impl Everything {
    /// Plain.
    #[rpc]
    async fn by_value(&self, session: Session) -> Result<String, String> {
        Ok(session.userid().to_string())
    }

    #[rpc]
    async fn by_ref(&self, session: &Session, a: i64, mut b: Vec<u8>) -> Result<usize, RpcError> {
        b.push(a as u8);
        let _ = session;
        Ok(b.len())
    }

    /// Safe to run twice: its client retries a failed attempt on another instance.
    #[rpc(idempotent)]
    async fn lookup(&self, _session: Session, key: String) -> Result<String, String> {
        Ok(key)
    }

    #[rpc(name = "HD_Peek", idempotent)]
    async fn peek(&self, _session: Session) -> Result<u8, String> {
        Ok(1)
    }

    #[rpc(name = "HD_Renamed")]
    async fn renamed(&self, _session: Session, _ignored: OnlyIn) -> Reply<()> {
        Ok(())
    }

    #[rpc]
    async fn calls_other(&self, session: Session) -> Result<usize, RpcError> {
        let _: String = EverythingClient::new(&self.app)
            .lookup(&session, "k".into())
            .await?;
        EverythingClient::new(&self.app)
            .by_ref(&session, 1, vec![2])
            .await
    }

    /// Arguments named like locals of the generated code, a raw name, an ignored argument.
    #[rpc]
    async fn r#type(
        &self,
        _session: Session,
        session: String,
        this: u8,
        _: u8,
        r#loop: bool,
    ) -> Result<String, String> {
        Ok(format!("{session}{this}{loop}", loop = r#loop))
    }

    /// The route `new` is fine; only the Rust name would clash with `EverythingClient::new`.
    #[rpc(name = "new")]
    async fn create(&self, session: Session) -> Result<String, RpcError> {
        EverythingClient::new(&self.app)
            .r#type(&session, "a".into(), 1, 2, true)
            .await
    }

    /// Not a handler: left alone.
    fn helper(&self) -> u8 {
        1
    }
}

fn main() {
    use mqrs_runtime::RpcModule;
    assert_eq!(<Everything as RpcModule>::NAME, "Every");
    assert_eq!(
        <Everything as RpcModule>::METHODS,
        &[
            "by_value",
            "by_ref",
            "lookup",
            "HD_Peek",
            "HD_Renamed",
            "calls_other",
            "type",
            "new"
        ]
    );
    let app = App::new(Config::default());
    let m = Everything { app: app.clone() };
    assert_eq!(m.helper(), 1);
    app.add_module(m).expect("all registrations linked");
    // The registration records which handlers are idempotent.
    let idempotent: Vec<&str> = mqrs_runtime::__private_0_1::inventory::iter::<
        mqrs_runtime::__private_0_1::RpcMethod,
    >
    .into_iter()
    .filter(|m| m.module == "Every" && m.idempotent)
    .map(|m| m.method)
    .collect();
    assert_eq!(idempotent.len(), 2, "{idempotent:?}");
    assert!(idempotent.contains(&"lookup") && idempotent.contains(&"HD_Peek"));
}
