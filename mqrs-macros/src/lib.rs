//! Procedural macros of mqrs: `#[rpc_module]` on an `impl` block and `#[rpc]` on its handlers.
//!
//! The work is split as in dtolnay's crates: `model` reads the `impl` block into plain data and
//! the facts later phases share, `validate` applies every rule and reports all violations at
//! once with precise spans, `expand` writes the registration, the dispatch shims and the typed
//! client, and `fallback` writes stand-ins for them when validation failed.

#![warn(missing_docs)]

mod expand;
mod fallback;
mod model;
mod validate;

use proc_macro::TokenStream;

/// Makes every `#[rpc]` method of an `impl` block callable as `Module/method`.
///
/// Arguments, all optional:
/// - `name = "Other"`: the module's routing name; defaults to the type name.
/// - `lifecycle`: you write `impl Lifecycle` yourself (`on_start` / `on_stop`); otherwise a
///   no-op one is generated.
/// - `vis = pub(crate)`: visibility of the typed client, its `new` and its methods; any
///   visibility written out in full (`pub`, `pub(crate)`, `pub(super)`, `pub(in path)`);
///   defaults to `pub`. An attribute cannot see the type's own visibility, so lower it here
///   when handlers take types that are not `pub`.
///
/// Generates: one dispatch shim and `inventory` registration per handler, `impl RpcModule`
/// (name and `METHODS`), and a typed client `<Type>Client` with `new(&app)` and one async method
/// per handler, named like the handler. A `#[cfg]` or `#[cfg_attr(.., cfg(..))]` on a handler
/// applies to all of these. Handlers cannot be named `new`, `clone` or `clone_from`, which the
/// client uses; keep such a route with `#[rpc(name = "new")] async fn create(..)`.
///
/// When a rule is broken, the errors come with the impl block as written and stand-ins for the
/// generated items, so code using the module adds no errors of its own.
#[proc_macro_attribute]
pub fn rpc_module(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = syn::parse_macro_input!(item as syn::Item);
    let out = match model::Module::parse(attr.into(), item) {
        Ok(module) => match validate::check(&module) {
            Ok(()) => expand::module(&module),
            Err(e) => fallback::module(&module, e),
        },
        Err(unusable) => {
            let mut out = unusable.error.to_compile_error();
            out.extend(unusable.item);
            out
        }
    };
    out.into()
}

/// Marks a handler inside an `#[rpc_module]` impl block; `#[rpc(name = "HD_Login")]` renames it.
///
/// On its own it is an error: only `#[rpc_module]` gives it meaning.
#[proc_macro_attribute]
pub fn rpc(attr: TokenStream, item: TokenStream) -> TokenStream {
    if attr.to_string() == "__mqrs_in_module" {
        return item;
    }
    // The call site of an attribute macro is the attribute itself: the error points at `#[rpc]`.
    let err = syn::Error::new(
        proc_macro2::Span::call_site(),
        "#[rpc] can only be used on a method inside an impl block marked #[rpc_module]",
    );
    let mut out = err.to_compile_error();
    out.extend(proc_macro2::TokenStream::from(item));
    out.into()
}

#[cfg(test)]
mod tests {
    /// Generated code names `::mqrs_runtime::__private_0_1`: the module's name carries the
    /// version both crates share, and both must change together.
    #[test]
    fn the_private_path_names_this_version() {
        assert!(
            env!("CARGO_PKG_VERSION").starts_with("0.1."),
            "rename __private_0_1 in mqrs-runtime's lib.rs and in the generated code"
        );
    }
}
