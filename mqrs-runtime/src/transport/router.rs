//! The app's router: a call to a module of this process takes the in-process path, any other
//! goes to the remote transport (a broker) when the app has one.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{InProcess, Request, Target, Transport};
use crate::error::RpcError;

/// Picks the in-process or the remote transport for each call.
pub(crate) struct Router {
    local: InProcess,
    server_id: Arc<str>,
    remote: Option<Arc<dyn Transport>>,
}

impl Router {
    /// Local modules through `local`; the rest through `remote`, when there is one.
    pub(crate) fn new(
        local: InProcess,
        server_id: Arc<str>,
        remote: Option<Arc<dyn Transport>>,
    ) -> Self {
        Router {
            local,
            server_id,
            remote,
        }
    }

    /// The remote transport, when `module` does not run here.
    fn elsewhere(&self, module: &str) -> Option<&dyn Transport> {
        // Without a remote transport, no lookup at all: every call of an app in one process
        // asks this.
        let remote = self.remote.as_deref()?;
        (!self.local.serves(module)).then_some(remote)
    }

    fn pick(&self, target: Target<'_>) -> Result<&dyn Transport, RpcError> {
        let here = target.server_id.is_none_or(|sid| sid == &*self.server_id);
        if here && self.local.serves(target.module) {
            return Ok(&self.local);
        }
        match &self.remote {
            Some(remote) => Ok(&**remote),
            None => Err(RpcError::UnknownModule(target.to_string())),
        }
    }
}

impl Transport for Router {
    fn request(&self, req: Request<'_>) -> BoxFuture<'static, Result<Vec<u8>, RpcError>> {
        match self.pick(req.target) {
            Ok(t) => t.request(req),
            Err(e) => futures_util::future::ready(Err(e)).boxed(),
        }
    }

    fn notify(&self, req: Request<'_>) -> Result<(), RpcError> {
        self.pick(req.target)?.notify(req)
    }

    fn reaches(&self, target: Target<'_>, method: &str) -> bool {
        self.pick(target).is_ok_and(|t| t.reaches(target, method))
    }

    // A module of this process is called here, never elsewhere: no instances to choose.
    fn instances(&self, module: &str) -> usize {
        // Asked before every call: the registry is looked at only when there is a choice.
        let Some(remote) = self.remote.as_deref() else {
            return 0;
        };
        // A module of this process is called here: no choice, whatever others run it.
        match remote.instances(module) {
            n if n >= 2 && self.local.serves(module) => 0,
            n => n,
        }
    }

    fn pick(&self, module: &str, tried: &[Arc<str>]) -> Option<Arc<str>> {
        self.elsewhere(module)?.pick(module, tried)
    }

    fn pass_over(&self, instance: &str) {
        if let Some(remote) = &self.remote {
            remote.pass_over(instance);
        }
    }

    fn linked(&self) -> bool {
        self.remote.as_deref().is_none_or(|r| r.linked())
    }

    fn idempotent(&self, module: &str, method: &str) -> bool {
        self.elsewhere(module)
            .is_some_and(|r| r.idempotent(module, method))
    }
}
