//! Procedural macros of mqrs: `#[rpc_module]` on an `impl` block and `#[rpc]` on its handlers.
//!
//! The work is split as in dtolnay's crates: [`model`] reads the `impl` block into plain data,
//! [`validate`] applies every rule and reports all violations at once with precise spans, and
//! [`expand`] writes the registration, the dispatch shims and the typed client.

mod expand;
mod model;
mod validate;

use proc_macro::TokenStream;

/// Makes every `#[rpc]` method of an `impl` block callable as `Module/method`.
///
/// The module name defaults to the type name; `#[rpc_module(name = "Other")]` changes it.
/// Generates: one `inventory` registration per handler, `impl RpcModule`, and a typed client
/// `<Type>Client` with one async method per handler.
#[proc_macro_attribute]
pub fn rpc_module(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    let item = syn::parse_macro_input!(item as syn::Item);
    match model::Module::parse(attr, item).and_then(|m| {
        validate::check(&m)?;
        Ok(expand::module(&m))
    }) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
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
