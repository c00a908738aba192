use mqrs_runtime::{rpc, rpc_module, Session};

pub struct Login;

#[rpc_module]
impl Login {
    #[rpc]
    fn track(&self, _session: Session) -> Result<String, String> {
        Ok(String::new())
    }
}

fn main() {}
