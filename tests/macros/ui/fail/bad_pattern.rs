use mqrs_runtime::{rpc, rpc_module, Session};

pub struct Calc;

#[rpc_module]
impl Calc {
    #[rpc]
    async fn add(&self, _session: Session, (a, b): (i64, i64)) -> Result<i64, String> {
        Ok(a + b)
    }
}

fn main() {}
