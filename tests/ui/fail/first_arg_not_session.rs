use mqrs_runtime::{rpc, rpc_module};

pub struct Login;

#[rpc_module]
impl Login {
    #[rpc]
    async fn track(&self, name: String) -> Result<String, String> {
        Ok(name)
    }
}

fn main() {}
