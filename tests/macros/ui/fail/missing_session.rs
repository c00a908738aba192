use mqrs_runtime::{rpc, rpc_module};

pub struct Login;

#[rpc_module]
impl Login {
    #[rpc]
    async fn track(&self) -> Result<String, String> {
        Ok(String::new())
    }
}

fn main() {}
