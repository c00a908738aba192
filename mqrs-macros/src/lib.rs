//! Procedural macros of mqrs: `#[rpc_module]` on an `impl` block and `#[rpc]` on its handlers.
//!
//! The work is split as in dtolnay's crates: `model` reads the `impl` block into plain data,
//! `validate` applies every rule and reports all violations at once with precise spans, and
//! `expand` writes the registration, the dispatch shims and the typed client.

#![warn(missing_docs)]

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
    let fallback = match &item {
        // Not an impl block: keep the item so the only error is ours.
        syn::Item::Impl(_) => proc_macro2::TokenStream::new(),
        other => quote::ToTokens::to_token_stream(other),
    };
    let module = match model::Module::parse(attr, item) {
        Ok(m) => m,
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(fallback);
            return out.into();
        }
    };
    match validate::check(&module) {
        Ok(()) => expand::module(&module).into(),
        Err(e) => {
            // Keep the impl block (its `#[rpc]` marks made inert) so that code using the module
            // does not add errors of its own to ours.
            let mut out = e.to_compile_error();
            out.extend(quote::ToTokens::to_token_stream(&module.item));
            out.into()
        }
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
