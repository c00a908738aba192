use mqrs_runtime::{rpc, rpc_module, Session};

pub struct Login;

#[rpc_module]
impl Login {
    #[rpc]
    async fn track(&self, name: String) -> Result<String, String> {
        Ok(name)
    }

    #[rpc]
    async fn rename(&self, session: &mut Session) -> Result<(), String> {
        let _ = session;
        Ok(())
    }
}

fn main() {}
