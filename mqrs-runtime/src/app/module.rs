//! What a module is to the app: [`RpcModule`] (its name and handlers, implemented by
//! `#[rpc_module]`) and [`Lifecycle`] (its start and stop hooks).

use std::future::Future;

use mqrs_base::sync::Locked;
use std::sync::Arc;

use super::error::AppError;
use super::handle::{App, ModuleEntry};
use crate::gate;
use crate::server::registry::RpcMethod;
use crate::server::ModuleRef;

/// Start and stop hooks of a module, run by the app in order of `add_module` (stop in reverse).
///
/// `#[rpc_module]` implements it with the defaults (do nothing); write your own
/// `impl Lifecycle` and mark the module `#[rpc_module(lifecycle)]` to use the hooks.
pub trait Lifecycle: Send + Sync + 'static {
    /// Runs before the gate opens; an error stops the app from starting.
    fn on_start(&self, app: &App) -> impl Future<Output = Result<(), String>> + Send {
        let _ = app;
        async { Ok(()) }
    }

    /// Runs after the listeners stopped, during graceful shutdown.
    fn on_stop(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Implemented by `#[rpc_module]`: the module's name and the handlers it declared.
pub trait RpcModule: Lifecycle {
    /// Module name used in routing, e.g. `Login`.
    const NAME: &'static str;
    /// Names of the module's `#[rpc]` handlers, to check that all registrations were linked.
    const METHODS: &'static [&'static str];
}

impl App {
    /// Adds a module made with `#[rpc_module]`; its `#[rpc]` handlers become callable.
    pub fn add_module<M: RpcModule>(&self, module: M) -> Result<(), AppError> {
        let mut modules = self.inner.modules.locked();
        if modules.iter().any(|m| m.name == M::NAME) || self.inner.registry.has_module(M::NAME) {
            return Err(AppError::DuplicateModule(M::NAME));
        }
        if M::NAME == gate::GATE_MODULE {
            return Err(AppError::ReservedName(M::NAME));
        }
        let linked: Vec<_> = linked_methods::<M>().collect();
        let missing: Vec<&'static str> = M::METHODS
            .iter()
            .copied()
            .filter(|m| !linked.iter().any(|l| l.method == *m))
            .collect();
        if !missing.is_empty() {
            return Err(AppError::MissingRegistrations {
                module: M::NAME,
                missing,
            });
        }
        let typed = Arc::new(module);
        let instance: ModuleRef = typed.clone();
        let tracer = self.inner.tracing.tracer(M::NAME);
        for m in linked {
            let (invoke, instance) = (m.invoke, instance.clone());
            self.inner.registry.add(
                M::NAME,
                m.method,
                Box::new(move |s, a| invoke(instance.clone(), s, a)),
                tracer.clone(),
            );
            if m.idempotent {
                self.inner.registry.set_idempotent(M::NAME, m.method);
            }
        }
        let (a, b) = (typed.clone(), typed);
        modules.push(ModuleEntry {
            name: M::NAME,
            start: Box::new(move |app: App| {
                let m = a.clone();
                Box::pin(async move { m.on_start(&app).await })
            }),
            stop: Box::new(move || {
                let m = b.clone();
                Box::pin(async move { m.on_stop().await })
            }),
        });
        tracing::debug!(
            module = M::NAME,
            handlers = M::METHODS.len(),
            "module added"
        );
        Ok(())
    }
}

/// The `inventory` registrations of module type `M`.
fn linked_methods<M: RpcModule>() -> impl Iterator<Item = &'static RpcMethod> {
    inventory::iter::<RpcMethod>
        .into_iter()
        .filter(|m| m.module == M::NAME && (m.type_id)() == std::any::TypeId::of::<M>())
}
