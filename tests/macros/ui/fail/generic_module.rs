//! A generic module is refused. The stand-ins carry the impl's generics, so code using the
//! module and the client methods that do not name `T` adds no errors.
use mqrs_runtime::{rpc, rpc_module, App, Config, Session};

pub struct Store<T> {
    items: Vec<T>,
}

#[rpc_module]
impl<T: Clone + Send + Sync + 'static> Store<T> {
    #[rpc]
    async fn count(&self, _session: Session) -> Result<usize, String> {
        Ok(self.items.len())
    }

    #[rpc]
    async fn get(&self, _session: Session, i: usize) -> Result<T, String> {
        self.items
            .get(i)
            .cloned()
            .ok_or_else(|| "no such item".to_string())
    }
}

fn main() {
    let app = App::new(Config::default());
    app.add_module(Store::<u8> { items: vec![1] })
        .expect("added");
    let _ = StoreClient::new(&app).count(&Session::default());
}
