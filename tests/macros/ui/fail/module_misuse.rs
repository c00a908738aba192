use mqrs_runtime::{rpc, rpc_module, Session};

pub struct Chat;

#[rpc_module(nmae = "Chat")]
impl Chat {}

#[rpc_module]
struct NotAnImpl;

pub struct Dup;

#[rpc_module]
impl Dup {
    #[rpc(name = "same")]
    async fn a(&self, _s: Session) -> Result<(), String> {
        Ok(())
    }

    #[rpc(name = "same")]
    async fn b(&self, _s: Session) -> Result<(), String> {
        Ok(())
    }

    #[rpc(idempotnt)]
    async fn c(&self, _s: Session) -> Result<(), String> {
        Ok(())
    }
}

fn main() {}
