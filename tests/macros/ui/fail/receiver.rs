use mqrs_runtime::{rpc, rpc_module, Session};

pub struct Calc;

#[rpc_module]
impl Calc {
    #[rpc]
    async fn by_value(self, _session: Session) -> Result<(), String> {
        Ok(())
    }

    #[rpc]
    async fn by_mut(&mut self, _session: Session) -> Result<(), String> {
        Ok(())
    }

    #[rpc]
    async fn no_self(_session: Session) -> Result<(), String> {
        Ok(())
    }
}

fn main() {}
