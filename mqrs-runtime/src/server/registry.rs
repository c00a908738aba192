//! The handler registry: what `#[rpc_module]` submits through `inventory`, and the routes an app
//! builds from it for the modules it runs.

use std::any::Any;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use mqrs_base::red::{Kind, Series};
use mqrs_base::sync::RwLocked;
use opentelemetry::Context;

use crate::error::RpcError;
use crate::session::Session;
use crate::trace::{layer, names, ServiceTracer};

/// The future a dispatch shim returns: the handler's reply encoded as JSON, or an error.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, RpcError>> + Send>>;

/// A running module instance, type-erased.
pub type ModuleRef = Arc<dyn Any + Send + Sync>;

/// The signature of a macro-generated dispatch shim.
pub type InvokeFn = fn(ModuleRef, Session, Vec<u8>) -> HandlerFuture;

/// One `#[rpc]` handler as registered by `#[rpc_module]` at link time.
#[derive(Debug)]
pub struct RpcMethod {
    /// Module name, e.g. `Login`.
    pub module: &'static str,
    /// Handler name, e.g. `track`.
    pub method: &'static str,
    /// The module's Rust type, so two types that share a module name never mix.
    pub type_id: fn() -> std::any::TypeId,
    /// The dispatch shim.
    pub invoke: InvokeFn,
    /// `#[rpc(idempotent)]`: safe to run twice, so callers may retry it on another instance.
    pub idempotent: bool,
}

inventory::collect!(RpcMethod);

/// What a process announces to the others through the broker: the modules it runs and the
/// handlers of theirs it declares idempotent (`Module/method`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announced {
    /// Module names.
    pub modules: Vec<String>,
    /// `Module/method` of each handler marked `#[rpc(idempotent)]`.
    pub idempotent: Vec<String>,
}

/// A type-erased handler body: session and JSON args in, JSON reply out.
pub type HandlerFn = Box<dyn Fn(Session, Vec<u8>) -> HandlerFuture + Send + Sync>;

/// A resolved handler: its full name, its body and the tracer of its module.
pub struct Route {
    /// `Module/method`.
    pub name: Arc<str>,
    pub(crate) handler: HandlerFn,
    pub(crate) tracer: ServiceTracer,
    /// The context values a traced call of this handler runs with (its module's tracer).
    pub(crate) values: Context,
    /// Where every call of it is counted (SERVER side).
    pub(crate) series: Arc<Series>,
    /// The module serving it, as the sessions its handler gets name it.
    pub(crate) service: Option<&'static str>,
}

impl Route {
    /// The route `module/method` running `handler`, traced by `tracer` (its module's).
    pub(crate) fn new(
        module: &str,
        method: &str,
        handler: HandlerFn,
        tracer: ServiceTracer,
    ) -> Route {
        let name: Arc<str> = Arc::from(format!("{module}/{method}"));
        let series = tracer
            .policy
            .red
            .table(Kind::Server, module)
            .series(&name, || name.to_string());
        let service = match names::intern(module) {
            Cow::Borrowed(s) => Some(s),
            Cow::Owned(_) => None,
        };
        Route {
            name,
            handler,
            values: layer::handler_values(&tracer),
            tracer,
            series,
            service,
        }
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("name", &self.name).finish()
    }
}

/// The routes of one module, by handler name.
type ModuleRoutes = HashMap<Box<str>, Arc<Route>>;

/// All routes of one app, by module and handler name.
#[derive(Default)]
pub struct Registry {
    modules: RwLock<HashMap<Box<str>, ModuleRoutes>>,
    /// `Module/method` of the handlers declared idempotent.
    idempotent: RwLock<BTreeSet<String>>,
}

impl Registry {
    /// Finds a route, or says whether the module or the handler is missing.
    pub fn resolve(&self, module: &str, method: &str) -> Result<Arc<Route>, RpcError> {
        let g = self.modules.read_locked();
        let m = g
            .get(module)
            .ok_or_else(|| RpcError::UnknownModule(module.to_string()))?;
        m.get(method)
            .cloned()
            .ok_or_else(|| RpcError::UnknownMethod {
                module: module.to_string(),
                method: method.to_string(),
            })
    }

    /// True when a module of that name is registered.
    pub fn has_module(&self, module: &str) -> bool {
        self.modules.read_locked().contains_key(module)
    }

    /// Adds one route; replaces any previous route of the same name.
    pub(crate) fn add(
        &self,
        module: &str,
        method: &str,
        handler: HandlerFn,
        tracer: ServiceTracer,
    ) {
        let route = Arc::new(Route::new(module, method, handler, tracer));
        self.modules
            .write_locked()
            .entry(module.into())
            .or_default()
            .insert(method.into(), route);
    }

    /// Declares `module/method` idempotent: other processes learn it from this one's presence
    /// and may retry a failed call of it on another instance.
    pub(crate) fn set_idempotent(&self, module: &str, method: &str) {
        self.idempotent
            .write_locked()
            .insert(format!("{module}/{method}"));
    }

    /// What this process announces to others: its modules and its idempotent handlers.
    pub(crate) fn announced(&self) -> Announced {
        let modules = self.module_names();
        let idempotent = self
            .idempotent
            .read_locked()
            .iter()
            .filter(|h| {
                h.split_once('/')
                    .is_some_and(|(m, _)| modules.iter().any(|n| n == m))
            })
            .cloned()
            .collect();
        Announced {
            modules,
            idempotent,
        }
    }

    /// Drops every route (and with them the module instances they hold).
    pub(crate) fn clear(&self) {
        self.modules.write_locked().clear();
        self.idempotent.write_locked().clear();
    }

    /// The modules of this process that have a method named `method`, sorted.
    pub fn modules_with(&self, method: &str) -> Vec<String> {
        let g = self.modules.read_locked();
        let mut v: Vec<String> = g
            .iter()
            .filter(|(_, hs)| hs.contains_key(method))
            .map(|(m, _)| m.to_string())
            .collect();
        v.sort();
        v
    }

    /// Names of the modules with routes, sorted.
    pub fn module_names(&self) -> Vec<String> {
        let g = self.modules.read_locked();
        let mut v: Vec<String> = g.keys().map(|m| m.to_string()).collect();
        v.sort();
        v
    }

    /// Names of every `Module/method`, sorted.
    pub fn names(&self) -> Vec<String> {
        let g = self.modules.read_locked();
        let mut v: Vec<String> = g
            .iter()
            .flat_map(|(m, hs)| hs.keys().map(move |h| format!("{m}/{h}")))
            .collect();
        v.sort();
        v
    }
}
