use mqrs_runtime::{rpc, Session};

pub struct Login;

impl Login {
    #[rpc]
    async fn track(&self, _session: Session) -> Result<String, String> {
        Ok(String::new())
    }
}

fn main() {}
