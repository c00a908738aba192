//! Code generation: the impl block as written, one dispatch shim and `inventory` registration
//! per handler, `impl RpcModule`, and the typed client. Names are spelled out so that
//! `cargo expand` reads like hand-written code; a handler's `#[cfg]`s go on everything
//! generated for it.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::ReturnType;

use crate::model::{Handler, Module, SessionKind};

/// Expands a validated module.
pub fn module(m: &Module) -> TokenStream {
    let item = &m.item;
    let self_ty = &item.self_ty;
    let module_name = &m.name;
    let methods = m.handlers.iter().map(|h| {
        let cfgs = &h.cfgs;
        let name = &h.name;
        quote!(#(#cfgs)* #name)
    });
    let shims = m.handlers.iter().map(|h| shim(m, h));
    let client = client(m);
    let doc =
        format!(" mqrs: `{module_name}` is an RPC module with the handlers listed in `METHODS`.");
    let lifecycle = if m.lifecycle {
        quote!()
    } else {
        quote! {
            /// mqrs: no start or stop hooks (use `#[rpc_module(lifecycle)]` to write your own).
            impl ::mqrs_runtime::Lifecycle for #self_ty {}
        }
    };
    quote! {
        #item

        #lifecycle

        #[doc = #doc]
        impl ::mqrs_runtime::RpcModule for #self_ty {
            const NAME: &'static str = #module_name;
            const METHODS: &'static [&'static str] = &[#(#methods),*];
        }

        #(#shims)*

        #client
    }
}

/// The span errors about the reply type should point at: the handler's return type.
fn output_span(h: &Handler) -> Span {
    match &h.func.sig.output {
        ReturnType::Type(_, t) => t.span(),
        ReturnType::Default => Span::call_site(),
    }
}

fn shim(m: &Module, h: &Handler) -> TokenStream {
    let self_ty = &m.item.self_ty;
    let module_name = &m.name;
    let method_name = &h.name;
    let full = format!("{module_name}/{method_name}");
    let idempotent = h.idempotent;
    let rust_fn = &h.func.sig.ident;
    let shim_fn = format_ident!("__mqrs_dispatch_{}_{}", m.type_ident, rust_fn);
    let cfgs = &h.cfgs;
    let names: Vec<&Ident> = h.args.iter().map(|a| &a.ident).collect();
    let types = h.args.iter().map(|a| &a.ty);
    let decode = if h.args.is_empty() {
        quote! { ::mqrs_runtime::__private_0_1::decode_no_args(#full, &args)?; }
    } else {
        quote! {
            let (#(#names,)*): (#(#types,)*) = ::mqrs_runtime::__private_0_1::decode_args(#full, &args)?;
        }
    };
    let session_arg = match h.session.as_ref().map(|s| s.kind) {
        Some(SessionKind::Ref) => quote!(&session),
        _ => quote!(session),
    };
    let reply = quote_spanned! {output_span(h)=>
        ::mqrs_runtime::__private_0_1::IntoReply::into_reply(result, #full)
    };
    let doc = format!(" mqrs: dispatch shim for `{full}`: decodes the arguments, runs the handler, encodes its reply.");
    quote! {
        #[doc = #doc]
        #(#cfgs)*
        #[allow(non_snake_case)]
        fn #shim_fn(
            module: ::mqrs_runtime::__private_0_1::ModuleRef,
            session: ::mqrs_runtime::Session,
            args: ::std::vec::Vec<u8>,
        ) -> ::mqrs_runtime::__private_0_1::HandlerFuture {
            ::std::boxed::Box::pin(async move {
                let this = ::mqrs_runtime::__private_0_1::downcast::<#self_ty>(module, #full)?;
                #decode
                let result = this.#rust_fn(#session_arg, #(#names),*).await;
                #reply
            })
        }

        #(#cfgs)*
        ::mqrs_runtime::__private_0_1::inventory::submit! {
            ::mqrs_runtime::__private_0_1::RpcMethod {
                module: #module_name,
                method: #method_name,
                type_id: ::std::any::TypeId::of::<#self_ty>,
                invoke: #shim_fn,
                idempotent: #idempotent,
            }
        }
    }
}

fn client(m: &Module) -> TokenStream {
    let client = format_ident!("{}Client", m.type_ident);
    let module_name = &m.name;
    let vis = &m.vis;
    let methods = m.handlers.iter().map(|h| {
        let rust_fn = &h.func.sig.ident;
        let method_name = &h.name;
        let cfgs = &h.cfgs;
        let names: Vec<&Ident> = h.args.iter().map(|a| &a.ident).collect();
        let params = h.args.iter().map(|a| {
            let (ident, ty) = (&a.ident, &a.ty);
            quote!(#ident: #ty)
        });
        let arg_types = h.args.iter().map(|a| &a.ty);
        let ok = match &h.ok {
            Some(t) => quote!(#t),
            None => quote!(()),
        };
        // Spanned on the handler's return type, so a type that is not a `Result` is reported there.
        let ret_span = output_span(h);
        let ret = quote_spanned!(ret_span=> ::std::result::Result<#ok, ::mqrs_runtime::RpcError>);
        let ok_bound = quote_spanned!(ret_span=>
            for<'__mqrs> #ok: ::mqrs_runtime::__private_0_1::serde::de::DeserializeOwned
        );
        let user_docs = h.func.attrs.iter().filter(|a| a.path().is_ident("doc"));
        // A handler safe to repeat is called so that a failed attempt is retried elsewhere.
        let (doc, call) = if h.idempotent {
            (
                format!(" Calls `{module_name}/{method_name}` (idempotent: a failed attempt is retried on another instance)."),
                quote!(call_idempotent),
            )
        } else {
            (format!(" Calls `{module_name}/{method_name}`."), quote!(call))
        };
        // Higher-ranked bounds are checked where the method is called, not here: a handler whose
        // argument is only `Deserialize` still compiles; only calling its client needs `Serialize`.
        quote! {
            #[doc = #doc]
            #[doc = ""]
            #(#user_docs)*
            #(#cfgs)*
            #[allow(non_snake_case)]
            #vis async fn #rust_fn(
                &self,
                session: &::mqrs_runtime::Session,
                #(#params),*
            ) -> #ret
            where
                #(for<'__mqrs> #arg_types: ::mqrs_runtime::__private_0_1::serde::Serialize,)*
                #ok_bound
            {
                self.app.#call(#module_name, #method_name, session, (#(#names,)*)).await
            }
        }
    });
    let doc = format!(
        " Typed client for the `{module_name}` module: one async method per `#[rpc]` handler."
    );
    quote! {
        #[doc = #doc]
        #[derive(Clone)]
        #vis struct #client {
            app: ::mqrs_runtime::App,
        }

        impl #client {
            /// A client that calls through `app`.
            #vis fn new(app: &::mqrs_runtime::App) -> Self {
                Self { app: app.clone() }
            }

            #(#methods)*
        }
    }
}
