use mqrs_runtime::{rpc, rpc_module, Session};

pub struct Chat;

#[rpc_module]
impl Chat {
    #[rpc]
    async fn say(&self, _session: &Session, text: &str) -> Result<(), String> {
        let _ = text;
        Ok(())
    }

    #[rpc]
    async fn generic<T>(&self, _session: Session, _t: T) -> Result<(), String> {
        Ok(())
    }

    #[rpc]
    async fn no_return(&self, _session: Session) {}
}

fn main() {}
