use mqrs_runtime::{rpc, rpc_module, Session};

pub struct Chat;

#[rpc_module]
impl Chat {
    #[rpc]
    async fn hello(&self, _session: Session) -> String {
        "hi".into()
    }
}

fn main() {}
